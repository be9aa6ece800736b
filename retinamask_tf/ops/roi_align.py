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

Two kernels (REFERENCE.md section 4):
  * ``aligned=False``: the legacy kernel of the released code: box corners map to
    feature coordinates by ``x * scale`` (pixel i's centre is at i), and a box is
    at least one feature pixel wide;
  * ``aligned=True``: box corners shifted by -0.5 feature pixel (pixel centres at
    i + 0.5 in box coordinates), no minimum size.
"""

import tensorflow as tf


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


def roi_align_single_level(features, boxes, spatial_scale, output_size=14, sampling_ratio=2,
                           aligned=False):
    """RoIAlign of every box on one feature map.

    Args:
      features: [B, H, W, C] feature map.
      boxes: [B, R, 4] yxyx in input-image pixels.
      spatial_scale: feature pixels per image pixel (1 / stride).
      output_size: bins per side.
      sampling_ratio: bilinear samples per bin per side (> 0).
      aligned: see the module docstring.
    Returns:
      [B, R, output_size, output_size, C], dtype of ``features``.
    """
    shape = tf.shape(features)
    batch, height, width = shape[0], shape[1], shape[2]
    num_rois = tf.shape(boxes)[1]
    boxes = tf.cast(boxes, tf.float32) * spatial_scale
    if aligned:
        boxes = boxes - 0.5
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    roi_h, roi_w = y1 - y0, x1 - x0
    if not aligned:
        roi_h, roi_w = tf.maximum(roi_h, 1.0), tf.maximum(roi_w, 1.0)
    n = output_size * sampling_ratio
    # Sample j of n sits at start + (j + 0.5) * size / n; +1 for the padding row/column.
    first_y, last_y = y0 + 0.5 * roi_h / n + 1.0, y0 + (n - 0.5) * roi_h / n + 1.0
    first_x, last_x = x0 + 0.5 * roi_w / n + 1.0, x0 + (n - 0.5) * roi_w / n + 1.0
    # crop_and_resize maps normalised coordinate c to pixel c * (size - 1); padded size = size + 2.
    den_y = tf.cast(height + 1, tf.float32)
    den_x = tf.cast(width + 1, tf.float32)
    norm_boxes = tf.stack([first_y / den_y, first_x / den_x, last_y / den_y, last_x / den_x], -1)
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    box_indices = tf.repeat(tf.range(batch), num_rois)
    crops = tf.image.crop_and_resize(tf.cast(padded, tf.float32), tf.reshape(norm_boxes, [-1, 4]),
                                     box_indices, [n, n], method="bilinear", extrapolation_value=0.0)
    pooled = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    channels = features.shape[-1] if features.shape[-1] is not None else shape[3]
    pooled = tf.reshape(pooled, [batch, num_rois, output_size, output_size, channels])
    return tf.cast(pooled, features.dtype)


def multilevel_roi_align(features, boxes, output_size=14, sampling_ratio=2, aligned=False,
                         min_level=3, max_level=5, canonical_level=4, canonical_size=224.0):
    """RoIAlign with each box read from its FPN level (``assign_levels``).

    Args:
      features: dict "P{l}" -> [B, H_l, W_l, C], stride 2^l.
      boxes: [B, R, 4] yxyx input-image pixels.
    Returns:
      [B, R, output_size, output_size, C]. Every level is sampled for every box
      (static shapes for XLA/TFLite); the box's own level is selected.
    """
    levels = assign_levels(boxes, min_level, max_level, canonical_level, canonical_size)
    out = None
    for level in range(min_level, max_level + 1):
        crop = roi_align_single_level(features[f"P{level}"], boxes, 1.0 / 2 ** level, output_size,
                                      sampling_ratio, aligned)
        if out is None:
            out = crop
        else:
            out = tf.where((levels == level)[:, :, None, None, None], crop, out)
    return out
