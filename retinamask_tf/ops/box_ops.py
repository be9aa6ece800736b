"""Box conversions, areas, pairwise IoU and clipping.

Convention everywhere in this package: boxes are ``[..., 4]`` float32 in
``(ymin, xmin, ymax, xmax)`` order ("yxyx"), absolute pixels, continuous
coordinates (a box covering pixel columns 0..9 has xmin=0, xmax=10; no "+1").
"""

import tensorflow as tf


def area(boxes):
    """Areas of ``boxes`` [..., 4] yxyx -> [...]; degenerate boxes give 0."""
    h = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return h * w


def pairwise_iou(boxes1, boxes2, valid2=None):
    """IoU between every box of ``boxes1`` and every box of ``boxes2``.

    Args:
      boxes1: [..., N, 4] yxyx.
      boxes2: [..., M, 4] yxyx (same leading batch dims as boxes1, or none).
      valid2: optional [..., M] bool; invalid (padded) columns get IoU -1 so that
        they can never win a max or pass a threshold.
    Returns:
      [..., N, M] float32 in [0, 1] (or -1 for invalid columns). Pairs whose union
      is empty get 0.
    """
    b1 = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b2 = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    ih = tf.maximum(tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.0)
    inter = ih * iw
    union = area(b1) + area(b2) - inter
    iou = tf.math.divide_no_nan(inter, union)
    if valid2 is not None:
        iou = tf.where(tf.expand_dims(valid2, -2), iou, -tf.ones_like(iou))
    return iou


def pairwise_ioa(boxes1, boxes2):
    """Intersection over the area of ``boxes1``: [..., N, 4], [..., M, 4] -> [..., N, M]."""
    b1 = tf.expand_dims(boxes1, -2)
    b2 = tf.expand_dims(boxes2, -3)
    ih = tf.maximum(tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.0)
    return tf.math.divide_no_nan(ih * iw, area(b1))


def clip_boxes(boxes, height, width):
    """Clips yxyx boxes [..., 4] to [0, height] x [0, width].

    ``height``/``width`` are scalars or tensors broadcastable to ``boxes[..., 0]``.
    """
    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    ymin = tf.clip_by_value(boxes[..., 0], 0.0, height)
    xmin = tf.clip_by_value(boxes[..., 1], 0.0, width)
    ymax = tf.clip_by_value(boxes[..., 2], 0.0, height)
    xmax = tf.clip_by_value(boxes[..., 3], 0.0, width)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def yxyx_to_center_size(boxes):
    """yxyx [..., 4] -> (cy, cx, h, w) [..., 4]."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return tf.stack([boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w], axis=-1)


def center_size_to_yxyx(boxes):
    """(cy, cx, h, w) [..., 4] -> yxyx [..., 4]."""
    cy, cx, h, w = tf.unstack(boxes, axis=-1)
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)

