"""FPN level assignment and RoIAlign built on ``tf.image.crop_and_resize`` (or its
equivalents for XLA and LiteRT).

RoIAlign (He et al., 2017) averages ``sampling_ratio`` x ``sampling_ratio``
bilinear samples per output bin. With the samples laid out on a regular grid of
``output_size * sampling_ratio`` points per side, that is one
``crop_and_resize`` at the doubled size followed by an average pool.

Exactness at the borders: the reference kernel returns 0 for a sample more than
one pixel outside the feature map and clamps samples within that pixel to the
edge. Padding the feature map by one replicated pixel on every side and letting
``crop_and_resize`` extrapolate zeros beyond the padded map reproduces both
rules exactly. The same rules in matrix form (``kernel="matmul"``): a sample at y
weighs each row of its level by max(0, 1 - |clamp(y, 0, H - 1) - row|), so a box's
result is a product of two small weight matrices with the feature map.

Two box conventions (the released code's and the aligned one):
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


ROI_ALIGN_KERNELS = ("crop_and_resize", "gather", "matmul")


def kernel_for(xla_compatible):
    """The RoIAlign kernel of a TF graph: ``gather`` where XLA compiles it (``CropAndResize``
    has no XLA kernel), TF's ``crop_and_resize`` otherwise."""
    return "gather" if xla_compatible else "crop_and_resize"


def multilevel_roi_align(features, boxes, output_size=14, sampling_ratio=2, aligned=False,
                         min_level=3, max_level=5, canonical_level=4, canonical_size=224.0,
                         kernel="crop_and_resize", training=False, box_plus_one=False):
    """RoIAlign with each box read from its FPN level (``assign_levels``).

    The levels are stacked into one tall map (narrower levels zero-padded on the right)
    and every box samples its own level's block, so all boxes are read at once with static
    shapes. ``kernel`` picks how (the same values, to float rounding):

    * ``crop_and_resize``: one ``tf.image.crop_and_resize`` of the stacked map, each level
      padded by one replicated pixel, and samples that the reference kernel zeroes (more
      than one pixel outside their level) zeroed with a mask. In training
      (``training=True``) its gradient is ``ops.crop.crop_and_resize_exact_grad``'s: TF's
      CPU ``CropAndResizeGradImage`` can lose contributions;
    * ``gather``: the same crop in gathers (``ops.crop.gather_crop_and_resize``), which XLA
      compiles (``CropAndResize`` has no XLA kernel), with an exact gradient;
    * ``matmul``: bilinear sampling, the edge rules and the bin average are separable, so
      each box's result is ``Wy F Wx^T`` per channel, with ``Wy`` [S, sum H_l] and ``Wx``
      [S, max W_l] tent weights: two batched matrix products and no gathers. LiteRT runs
      it about 4x faster than the gathers (the mask TFLite files use it).

    Args:
      features: dict "P{l}" -> [B, H_l, W_l, C], stride 2^l.
      boxes: [B, R, 4] yxyx input-image pixels.
      kernel: one of ``ROI_ALIGN_KERNELS``.
      box_plus_one: sample each box with its bottom/right edge moved 1 px in (the released
        code's "+1" box of the same pixels); its level comes from the unmoved box.
    Returns:
      [B, R, output_size, output_size, C], dtype of the features. A box with a
      non-finite coordinate (a diverged model) reads the empty box at 0 instead
      of failing inside crop_and_resize.
    """
    if kernel not in ROI_ALIGN_KERNELS:
        raise ValueError(f"RoIAlign kernel must be one of {ROI_ALIGN_KERNELS}, got {kernel!r}")
    boxes = tf.cast(boxes, tf.float32)
    boxes = tf.where(tf.math.is_finite(boxes), boxes, 0.0)
    levels = assign_levels(boxes, min_level, max_level, canonical_level, canonical_size)
    if box_plus_one:
        boxes = boxes - tf.constant([0.0, 0.0, 1.0, 1.0])
    maps = [features[f"P{l}"] for l in range(min_level, max_level + 1)]
    dtype = maps[0].dtype
    maps = [tf.cast(m, tf.float32) for m in maps]
    sizes = [tf.shape(m)[1:3] for m in maps]  # dynamic-safe; static shapes fold to constants
    index = levels - min_level  # [B, R]
    scale = tf.gather(tf.constant([2.0 ** -l for l in range(min_level, max_level + 1)]), index)
    level_hw = tf.gather(tf.cast(tf.stack(sizes), tf.float32), index)  # [B, R, 2]
    first, last = _sample_grid(boxes * scale[..., None], 1.0, output_size, sampling_ratio, aligned)
    n = output_size * sampling_ratio
    steps = tf.range(n, dtype=tf.float32) / float(n - 1) if n > 1 else tf.zeros([1])
    coords = first[..., None, :] + steps[:, None] * (last - first)[..., None, :]  # [B, R, n, 2]
    # The reference returns 0 for samples outside [-1, H_l] x [-1, W_l] of their level.
    inside = tf.cast((coords >= -1.0) & (coords <= level_hw[..., None, :]), tf.float32)
    if kernel == "matmul":
        pooled = _separable_roi_align(maps, sizes, index, coords, inside, level_hw,
                                      output_size, sampling_ratio)
    else:
        pooled = _cropped_roi_align(maps, sizes, index, first, last, inside, output_size,
                                    sampling_ratio, kernel, training)
    return tf.cast(pooled, dtype)


def _cropped_roi_align(maps, sizes, index, first, last, inside, output_size, sampling_ratio,
                       kernel, training):
    """The ``crop_and_resize`` / ``gather`` kernels of ``multilevel_roi_align``:
    one crop of the padded, stacked levels at n = output_size * sampling_ratio samples
    per side, masked, then averaged in sampling_ratio^2 bins. -> [B, R, S, S, C]."""
    total_w = tf.reduce_max(tf.stack([s[1] for s in sizes])) + 2
    blocks, offsets, offset = [], [], tf.constant(0)
    for m, size in zip(maps, sizes):
        block = tf.pad(m, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        blocks.append(tf.pad(block, [[0, 0], [0, 0], [0, total_w - (size[1] + 2)], [0, 0]]))
        offsets.append(offset)
        offset = offset + size[0] + 2
    stacked = tf.concat(blocks, axis=1)  # [B, sum(H_l + 2), max(W_l) + 2, C]
    total_h = offset

    y_offset = tf.gather(tf.cast(tf.stack(offsets), tf.float32), index)
    shift = tf.stack([y_offset + 1.0, tf.ones_like(y_offset)], -1)
    den = tf.cast(tf.stack([total_h - 1, total_w - 1]), tf.float32)
    norm_boxes = tf.concat([(first + shift) / den, (last + shift) / den], -1)

    n = output_size * sampling_ratio
    batch, num_rois = tf.shape(index)[0], tf.shape(index)[1]
    if training and kernel == "crop_and_resize":
        crops = crop_and_resize_exact_grad(stacked, norm_boxes, [n, n])
    else:
        crop = gather_crop_and_resize if kernel == "gather" else tf.image.crop_and_resize
        crops = crop(stacked, tf.reshape(norm_boxes, [-1, 4]),
                     tf.repeat(tf.range(batch), num_rois), [n, n], extrapolation_value=0.0)
    inside = tf.reshape(inside, [-1, n, 2])
    crops = crops * (inside[:, :, None, 0] * inside[:, None, :, 1])[..., None]
    pooled = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    channels = maps[0].shape[-1]
    return tf.reshape(pooled, [batch, num_rois, output_size, output_size, channels])


def _bin_weights(coords, inside, grid, output_size, sampling_ratio):
    """Tent weights of one axis: sample coordinates ``coords`` [B, R, n] (clamped to their
    level), ``inside`` [B, R, n] (0 where the reference zeroes the sample), ``grid``
    [B, R, G] (each stacked row's coordinate in the box's level) -> [B, R, S, G], each
    output bin's mean over its sampling_ratio samples of max(0, 1 - |coord - grid|)."""
    w = tf.nn.relu(1.0 - tf.abs(coords[..., None] - grid[..., None, :])) * inside[..., None]
    shape = tf.shape(w)
    w = tf.reshape(w, tf.concat([shape[:2], [output_size, sampling_ratio], shape[3:]], 0))
    return tf.reduce_sum(w, axis=3) * (1.0 / sampling_ratio)


def _separable_roi_align(maps, sizes, index, coords, inside, level_hw, output_size,
                         sampling_ratio):
    """The ``matmul`` kernel of ``multilevel_roi_align``: out[b, r] = Wy F_b Wx^T per
    channel over the stacked levels F_b [sum H_l, max W_l, C]. The reference's bilinear
    sample at y reads rows floor(y) and floor(y) + 1 with weights 1 - |y - row|, after
    clamping y into [0, H_l - 1]: the tent max(0, 1 - |clamp(y) - row|) over the level's
    rows, zero on every other row. -> [B, R, S, S, C]."""
    width = tf.reduce_max(tf.stack([s[1] for s in sizes]))
    stacked = tf.concat([tf.pad(m, [[0, 0], [0, 0], [0, width - s[1]], [0, 0]])
                         for m, s in zip(maps, sizes)], axis=1)  # [B, T, W, C]
    heights = tf.stack([s[0] for s in sizes])
    row0 = tf.gather(tf.cast(tf.cumsum(heights, exclusive=True), tf.float32), index)  # [B, R]
    total = tf.reduce_sum(heights)
    clamped = tf.clip_by_value(coords, 0.0, level_hw[..., None, :] - 1.0)  # [B, R, n, 2]
    rows = tf.range(total, dtype=tf.float32)[None, None, :] - row0[..., None]  # [B, R, T]
    cols = tf.range(width, dtype=tf.float32)[None, None, :] + tf.zeros_like(row0)[..., None]
    wy = _bin_weights(clamped[..., 0], inside[..., 0], rows, output_size, sampling_ratio)
    wx = _bin_weights(clamped[..., 1], inside[..., 1], cols, output_size, sampling_ratio)
    batch, num_rois = tf.shape(index)[0], tf.shape(index)[1]
    channels = maps[0].shape[-1]
    s = output_size
    # Rows: [B, R S, T] x [B, T, W C] -> [B R, S_y, W, C]; then columns: per box and
    # output row, [S_x, W] x [W, C] (Wx broadcast over the rows), no transposes.
    by_rows = tf.matmul(tf.reshape(wy, [batch, -1, total]),
                        tf.reshape(stacked, [batch, total, width * channels]))
    by_rows = tf.reshape(by_rows, [-1, s, width, channels])
    out = tf.matmul(tf.reshape(wx, [-1, 1, s, width]), by_rows)  # [B R, S_y, S_x, C]
    return tf.reshape(out, [batch, num_rois, s, s, channels])
