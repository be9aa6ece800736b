"""Sigmoid focal loss (Lin et al. 2017), written out so no addon package is needed."""

import keras
import tensorflow as tf


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise focal loss.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), with p_t = p for targets 1 and 1 - p
    for targets 0, alpha_t = alpha for targets 1 and 1 - alpha for targets 0.

    Args:
      logits: [...] float logits.
      targets: [...] float in {0, 1} (same shape).
    Returns:
      [...] float32 loss, not reduced.
    """
    logits = tf.cast(logits, tf.float32)
    targets = tf.cast(targets, tf.float32)
    # Numerically stable log(p_t) via the cross-entropy with logits.
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p = tf.sigmoid(logits)
    p_t = targets * p + (1.0 - targets) * (1.0 - p)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return alpha_t * tf.pow(1.0 - p_t, gamma) * ce


def classification_loss(cls_logits, cls_targets, labels, alpha=0.25, gamma=2.0):
    """Focal loss summed over all non-ignored anchors and all K classes.

    Args:
      cls_logits: [B, N, K] logits.
      cls_targets: [B, N] int32 class index on positives, -1 elsewhere.
      labels: [B, N] int32 match labels; IGNORED (-1) anchors contribute nothing.
    Returns:
      scalar float32 sum (the caller divides by the number of positives).
    """
    num_classes = cls_logits.shape[-1]
    one_hot = tf.one_hot(cls_targets, num_classes, dtype=tf.float32)  # -1 -> all zeros
    loss = sigmoid_focal_loss(cls_logits, one_hot, alpha, gamma)
    keep = tf.cast(labels >= 0, tf.float32)[..., None]
    return tf.reduce_sum(loss * keep)


@keras.saving.register_keras_serializable(package="retinamask_tf")
class FocalLoss:
    """The classification loss part of the detector: ``classification_loss`` with its
    (alpha, gamma), and what its sum is divided by: ``normalizer`` "positives" (the number
    of positive anchors, at least 1) or "positives_plus_images" (the released code adds the
    number of images)."""

    NORMALIZERS = ("positives", "positives_plus_images")

    def __init__(self, alpha=0.25, gamma=2.0, normalizer="positives"):
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        if normalizer not in self.NORMALIZERS:
            raise ValueError(f"normalizer must be one of {self.NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer

    def divisor(self, num_positives, num_images):
        """The number the summed loss is divided by (float32 scalars in, out)."""
        if self.normalizer == "positives_plus_images":
            return num_positives + num_images
        return tf.maximum(num_positives, 1.0)

    def __call__(self, cls_logits, cls_targets, labels):
        """Sum over non-ignored anchors and classes (see ``classification_loss``)."""
        return classification_loss(cls_logits, cls_targets, labels, self.alpha, self.gamma)

    def get_config(self):
        return {"alpha": self.alpha, "gamma": self.gamma, "normalizer": self.normalizer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
