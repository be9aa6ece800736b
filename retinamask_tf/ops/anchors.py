"""Multilevel anchor generation.

Order of the flat anchor list (and of the heads' flattened outputs, which must
match it): level (min..max), then row y, then column x, then anchor index
``a = scale_index * len(aspect_ratios) + ratio_index``.
"""

import tensorflow as tf


def level_anchor_shapes(level, num_scales, aspect_ratios, anchor_scale):
    """Heights and widths of the A anchors of one level.

    Args:
      level: pyramid level l (stride 2^l).
      num_scales: octave scales per level (3 -> 2^0, 2^(1/3), 2^(2/3)).
      aspect_ratios: height/width ratios, e.g. (0.5, 1.0, 2.0).
      anchor_scale: base size in strides (4 -> 32 px at P3).
    Returns:
      (heights, widths), each [A] float32, A = num_scales * len(aspect_ratios).
    """
    stride = 2.0 ** level
    heights, widths = [], []
    for s in range(num_scales):
        size = anchor_scale * stride * 2.0 ** (s / num_scales)
        for ratio in aspect_ratios:
            # Area size^2 is kept; ratio = h / w.
            heights.append(size * ratio ** 0.5)
            widths.append(size / ratio ** 0.5)
    return tf.constant(heights, tf.float32), tf.constant(widths, tf.float32)


def feature_size(image_size, level):
    """(height, width) of the level-l feature map for an input (H, W) padded to stride 2^l."""
    stride = 2 ** level
    return -(-int(image_size[0]) // stride), -(-int(image_size[1]) // stride)


def generate_anchors(image_size, min_level, max_level, num_scales, aspect_ratios, anchor_scale):
    """All anchors of an image, flattened in the order the heads emit them.

    Args:
      image_size: static (height, width) of the padded model input.
    Returns:
      (anchors, level_counts): anchors [N, 4] float32 yxyx absolute pixels, with
      centres at ((y + 0.5) * stride, (x + 0.5) * stride); level_counts: python
      list of N_l = H_l * W_l * A per level, summing to N.
    """
    boxes, counts = [], []
    for level in range(min_level, max_level + 1):
        stride = 2.0 ** level
        fh, fw = feature_size(image_size, level)
        heights, widths = level_anchor_shapes(level, num_scales, aspect_ratios, anchor_scale)
        cy = (tf.range(fh, dtype=tf.float32) + 0.5) * stride
        cx = (tf.range(fw, dtype=tf.float32) + 0.5) * stride
        cy, cx = tf.meshgrid(cy, cx, indexing="ij")  # [fh, fw]
        cy = cy[..., None]
        cx = cx[..., None]  # [fh, fw, 1]
        h = heights[None, None, :]
        w = widths[None, None, :]  # [1, 1, A]
        level_boxes = tf.stack(
            [cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)  # [fh, fw, A, 4]
        boxes.append(tf.reshape(level_boxes, [-1, 4]))
        counts.append(fh * fw * int(heights.shape[0]))
    return tf.concat(boxes, axis=0), counts
