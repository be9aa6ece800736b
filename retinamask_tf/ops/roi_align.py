"""FPN level assignment and RoIAlign built on ``tf.image.crop_and_resize``.

RoIAlign (He et al., 2017) averages ``sampling_ratio`` x ``sampling_ratio``
bilinear samples per output bin. With the samples laid out on a regular grid of
``output_size * sampling_ratio`` points per side, that is one
``crop_and_resize`` at the doubled size followed by an average pool.

Exactness at the borders: the reference kernel returns 0 for a sample more than
one pixel outside the feature map and clamps samples within that pixel to the
edge. Padding the feature map by one replicated pixel on every side and letting
``crop_and_resize`` extrapolate zeros beyond the padded map reproduces both
rules exactly.

Two kernels (the released code's and the aligned one):
  * ``aligned=False``: the legacy kernel of the released code: box corners map to
    feature coordinates by ``x * scale`` (pixel i's centre is at i), and a box is
    at least one feature pixel wide;
  * ``aligned=True``: box corners shifted by -0.5 feature pixel (pixel centres at
    i + 0.5 in box coordinates), no minimum size.
"""

import tensorflow as tf

from retinamask_tf.ops.crop import crop_and_resize_exact_grad, gather_crop_and_resize


def assign_levels(boxes, min_level=3, max_level=5, canonical_level=4, canonical_size=224.0):
    """FPN level of each box: floor(k0 + log2(sqrt(w h) / s0 + 1e-6)) clamped.

    Args:
      boxes: [..., 4] yxyx, absolute pixels of the model input.
    Returns:
      int32 [...] levels in [min_level, max_level].
    """
    boxes = tf.cast(boxes, tf.float32)
    h = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    scale = tf.sqrt(h * w)
    level = tf.floor(canonical_level + tf.math.log(scale / canonical_size + 1e-6) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


def _sample_grid(boxes, spatial_scale, output_size, sampling_ratio, aligned):
    """First and last of the n = output_size * sampling_ratio sample coordinates per
    side, in feature pixels (pixel i's centre at i): ([..., 2] (y, x), [..., 2])."""
    boxes = tf.cast(boxes, tf.float32) * spatial_scale
    if aligned:
        boxes = boxes - 0.5
    start = boxes[..., 0:2]
    size = boxes[..., 2:4] - start
    if not aligned:
        size = tf.maximum(size, 1.0)
    n = float(output_size * sampling_ratio)
    # Sample j of n sits at start + (j + 0.5) * size / n.
    return start + 0.5 * size / n, start + (n - 0.5) * size / n


def multilevel_roi_align(features, boxes, output_size=14, sampling_ratio=2, aligned=False,
                         min_level=3, max_level=5, canonical_level=4, canonical_size=224.0,
                         xla_compatible=False, training=False, box_plus_one=False):
    """RoIAlign with each box read from its FPN level (``assign_levels``).

    One ``crop_and_resize`` for all boxes: the levels, each padded by one
    replicated pixel, are stacked into one tall map (narrower levels zero-padded
    on the right), each box's samples are shifted into its level's block, and
    samples that the reference kernel zeroes (more than one pixel outside their
    level) are zeroed with a mask. Exact, with static shapes, at the cost of one
    crop per box instead of one per box and level.

    Args:
      features: dict "P{l}" -> [B, H_l, W_l, C], stride 2^l.
      boxes: [B, R, 4] yxyx input-image pixels.
      xla_compatible: crop with ``gather_crop_and_resize``: the same values; XLA compiles
        it (``CropAndResize`` has no XLA kernel), and its gradient is exact, where TF's CPU
        ``CropAndResizeGradImage`` can lose contributions (see ``ops/crop.py``).
      training: crop with ``crop_and_resize_exact_grad`` (the same op forward; on a CPU-only
        host its gradient avoids that race). Inference graphs keep the plain op.
      box_plus_one: sample each box with its bottom/right edge moved 1 px in (the released
        code's "+1" box of the same pixels); its level comes from the unmoved box.
    Returns:
      [B, R, output_size, output_size, C], dtype of the features. A box with a
      non-finite coordinate (a diverged model) reads the empty box at 0 instead
      of failing inside crop_and_resize.
    """
    boxes = tf.cast(boxes, tf.float32)
    boxes = tf.where(tf.math.is_finite(boxes), boxes, 0.0)
    levels = assign_levels(boxes, min_level, max_level, canonical_level, canonical_size)
    if box_plus_one:
        boxes = boxes - tf.constant([0.0, 0.0, 1.0, 1.0])
    maps = [features[f"P{l}"] for l in range(min_level, max_level + 1)]
    dtype = maps[0].dtype
    sizes = [tf.shape(m)[1:3] for m in maps]  # dynamic-safe; static shapes fold to constants
    total_w = tf.reduce_max(tf.stack([s[1] for s in sizes])) + 2
    blocks, offsets, offset = [], [], tf.constant(0)
    for m, size in zip(maps, sizes):
        block = tf.pad(tf.cast(m, tf.float32), [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        blocks.append(tf.pad(block, [[0, 0], [0, 0], [0, total_w - (size[1] + 2)], [0, 0]]))
        offsets.append(offset)
        offset = offset + size[0] + 2
    stacked = tf.concat(blocks, axis=1)  # [B, sum(H_l + 2), max(W_l) + 2, C]
    total_h = offset

    index = levels - min_level  # [B, R]
    scale = tf.gather(tf.constant([2.0 ** -l for l in range(min_level, max_level + 1)]), index)
    level_hw = tf.gather(tf.cast(tf.stack(sizes), tf.float32), index)  # [B, R, 2]
    y_offset = tf.gather(tf.cast(tf.stack(offsets), tf.float32), index)
    first, last = _sample_grid(boxes * scale[..., None], 1.0, output_size, sampling_ratio, aligned)
    shift = tf.stack([y_offset + 1.0, tf.ones_like(y_offset)], -1)
    den = tf.cast(tf.stack([total_h - 1, total_w - 1]), tf.float32)
    norm_boxes = tf.concat([(first + shift) / den, (last + shift) / den], -1)

    n = output_size * sampling_ratio
    batch, num_rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    if training and not xla_compatible:
        crops = crop_and_resize_exact_grad(stacked, norm_boxes, [n, n])
    else:
        crop = gather_crop_and_resize if xla_compatible else tf.image.crop_and_resize
        crops = crop(stacked, tf.reshape(norm_boxes, [-1, 4]),
                     tf.repeat(tf.range(batch), num_rois), [n, n], extrapolation_value=0.0)
    # The reference returns 0 for samples outside [-1, H_l] x [-1, W_l] of their level.
    steps = tf.range(n, dtype=tf.float32) / float(n - 1) if n > 1 else tf.zeros([1])
    coords = first[..., None, :] + steps[:, None] * (last - first)[..., None, :]  # [B, R, n, 2]
    inside = tf.cast((coords >= -1.0) & (coords <= level_hw[..., None, :]), tf.float32)
    inside = tf.reshape(inside, [-1, n, 2])
    crops = crops * (inside[:, :, None, 0] * inside[:, None, :, 1])[..., None]
    pooled = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    channels = maps[0].shape[-1]
    pooled = tf.reshape(pooled, [batch, num_rois, output_size, output_size, channels])
    return tf.cast(pooled, dtype)
