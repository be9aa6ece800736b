"""Multilevel anchor generation.

Order of the flat anchor list (and of the heads' flattened outputs, which must
match it): level (min..max), then row y, then column x, then anchor index
``a = scale_index * len(aspect_ratios) + ratio_index``.

Three styles give the anchors' sizes and centres (docs/weights.md):
  exact        size ``anchor_scale * 2^level * 2^(s / num_scales)``, area kept for every
               ratio, centred in the cell at ``((y + 0.5) * stride, (x + 0.5) * stride)``;
  released     the released RetinaMask (Detectron) generator: a ``stride x stride`` cell
               is given each ratio with rounded sides, then scaled; its "+1" boxes
               ``(x1, x2)`` are ``(x1, x2 + 1)`` here, which centres them in the cell too;
  torchvision  sizes truncated to integers (``int(32 * 2^(1/3)) = 40``), half-sides
               rounded, centred on the cell's corner ``(y * stride, x * stride)``.
The order above is the same for all three (the released and torchvision generators are
ratio-major: weight converters reorder the predictors' channels).
"""

import numpy as np
import tensorflow as tf

STYLES = ("exact", "released", "torchvision")


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


def cell_anchors(level, num_scales, aspect_ratios, anchor_scale, style):
    """The A anchors of one location of level ``level`` as yxyx offsets from the cell's
    corner ``(y * stride, x * stride)``: [A, 4] float32 NumPy, scale-major order."""
    if style not in STYLES:
        raise ValueError(f"anchor style must be one of {STYLES}, got {style!r}")
    stride = 2 ** level
    rows = []
    for s in range(num_scales):
        size = anchor_scale * stride * 2.0 ** (s / num_scales)
        for ratio in aspect_ratios:
            if style == "exact":
                h, w = size * ratio ** 0.5, size / ratio ** 0.5
                rows.append([stride / 2 - h / 2, stride / 2 - w / 2,
                             stride / 2 + h / 2, stride / 2 + w / 2])
            elif style == "released":
                # Ratio applied to the stride x stride cell with rounding, then scaled (float64
                # as the released NumPy code); its box (ctr - (w-1)/2, ctr + (w-1)/2), ctr =
                # (stride-1)/2, is (stride/2 - w/2, stride/2 + w/2) with continuous widths.
                w0 = np.round(np.sqrt(stride * stride / ratio))
                h0 = np.round(w0 * ratio)
                scale = size / stride
                h, w = h0 * scale, w0 * scale
                rows.append([stride / 2 - h / 2, stride / 2 - w / 2,
                             stride / 2 + h / 2, stride / 2 + w / 2])
            else:  # torchvision: float32 arithmetic, integer sizes, rounded half-sides
                size32 = np.float32(int(size))
                h_ratio = np.sqrt(np.float32(ratio))
                w_ratio = np.float32(1.0) / h_ratio
                half_h = np.round(h_ratio * size32 / np.float32(2.0))
                half_w = np.round(w_ratio * size32 / np.float32(2.0))
                rows.append([-half_h, -half_w, half_h, half_w])
    return np.asarray(rows, np.float32)


def feature_size(image_size, level):
    """(height, width) of the level-l feature map for an input (H, W) padded to stride 2^l."""
    stride = 2 ** level
    return -(-int(image_size[0]) // stride), -(-int(image_size[1]) // stride)


def generate_anchors(image_size, min_level, max_level, num_scales, aspect_ratios, anchor_scale,
                     style="exact"):
    """All anchors of an image, flattened in the order the heads emit them.

    Args:
      image_size: static (height, width) of the padded model input.
      style: "exact", "released" or "torchvision" (module docstring).
    Returns:
      (anchors, level_counts): anchors [N, 4] float32 yxyx absolute pixels (exact: with
      centres at ((y + 0.5) * stride, (x + 0.5) * stride)); level_counts: python
      list of N_l = H_l * W_l * A per level, summing to N.
    """
    boxes, counts = [], []
    for level in range(min_level, max_level + 1):
        stride = 2.0 ** level
        fh, fw = feature_size(image_size, level)
        if style != "exact":
            cell = tf.constant(cell_anchors(level, num_scales, aspect_ratios, anchor_scale, style))
            oy = tf.range(fh, dtype=tf.float32) * stride
            ox = tf.range(fw, dtype=tf.float32) * stride
            oy, ox = tf.meshgrid(oy, ox, indexing="ij")
            corner = tf.stack([oy, ox, oy, ox], axis=-1)[:, :, None, :]  # [fh, fw, 1, 4]
            boxes.append(tf.reshape(corner + cell[None, None], [-1, 4]))
            counts.append(fh * fw * int(cell.shape[0]))
            continue
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
