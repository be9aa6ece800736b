"""Mask loss: per-pixel sigmoid cross-entropy on the target class's channel."""

import tensorflow as tf

from retinamask_tf.ops.masks import select_class


def mask_loss_sum(mask_logits, classes, targets, positive):
    """Summed BCE of positive RoIs.

    Args:
      mask_logits: [N, m, m, K] class-specific logits.
      classes: [N] int32 target class of each RoI.
      targets: [N, m, m] float {0, 1}.
      positive: [N] bool, RoIs that count.
    Returns:
      scalar float32: sum over positive RoIs and their m x m pixels. Divide by
      (number of positives x m x m) for the mean (the caller knows the global count).
    """
    logits = select_class(mask_logits, classes)  # [N, m, m]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets, tf.float32), logits=logits)
    # where, not multiply: a non-positive RoI's logits may be anything (even inf).
    return tf.reduce_sum(tf.where(positive[:, None, None], bce, 0.0))
