"""Box coding: anchors + deltas <-> boxes (the R-CNN parameterisation).

Deltas are ``(dy, dx, dh, dw)`` in the same order as yxyx boxes:
  dy = wy * (y_c - y_a) / h_a,  dx = wx * (x_c - x_a) / w_a,
  dh = wh * log(h / h_a),       dw = ww * log(w / w_a).
The weights and the clip come from ``config.BoxCoderConfig`` (the released code's
(10, 10, 5, 5) and log(1000 / 16) by default).
"""

import tensorflow as tf

from retinamask_tf.ops import box_ops

def encode(boxes, anchors, weights):
    """Regression targets of ``boxes`` relative to ``anchors``.

    Args:
      boxes: [..., 4] yxyx absolute pixels (positive size).
      anchors: [..., 4] yxyx, broadcastable to boxes.
      weights: (wy, wx, wh, ww).
    Returns:
      deltas [..., 4] (dy, dx, dh, dw). Degenerate boxes are floored at 1e-6 px
      so that the log stays finite; callers mask the rows they do not use.
    """
    b = box_ops.yxyx_to_center_size(boxes)
    a = box_ops.yxyx_to_center_size(anchors)
    eps = 1e-6
    ah = tf.maximum(a[..., 2], eps)
    aw = tf.maximum(a[..., 3], eps)
    dy = weights[0] * (b[..., 0] - a[..., 0]) / ah
    dx = weights[1] * (b[..., 1] - a[..., 1]) / aw
    dh = weights[2] * tf.math.log(tf.maximum(b[..., 2], eps) / ah)
    dw = weights[3] * tf.math.log(tf.maximum(b[..., 3], eps) / aw)
    return tf.stack([dy, dx, dh, dw], axis=-1)


def decode(deltas, anchors, weights, scale_clip):
    """Inverse of ``encode``; dh/dw (after dividing by their weights) clipped at ``scale_clip``.

    Args:
      deltas: [..., 4] (dy, dx, dh, dw).
      anchors: [..., 4] yxyx, broadcastable to deltas.
    Returns:
      boxes [..., 4] yxyx absolute pixels (not clipped to the image).
    """
    deltas = tf.cast(deltas, tf.float32)
    a = box_ops.yxyx_to_center_size(anchors)
    dy = deltas[..., 0] / weights[0]
    dx = deltas[..., 1] / weights[1]
    dh = tf.minimum(deltas[..., 2] / weights[2], scale_clip)
    dw = tf.minimum(deltas[..., 3] / weights[3], scale_clip)
    cy = dy * a[..., 2] + a[..., 0]
    cx = dx * a[..., 3] + a[..., 1]
    h = tf.exp(dh) * a[..., 2]
    w = tf.exp(dw) * a[..., 3]
    return box_ops.center_size_to_yxyx(tf.stack([cy, cx, h, w], axis=-1))
