"""Smooth L1 and RetinaMask's Self-Adjusting Smooth L1 (paper section 3.2).

smooth_l1(x; beta) = 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta.

The self-adjusting variant keeps, per box coordinate (dy, dx, dh, dw), a running
mean mu_R and variance var_R of |x| over positive anchors, updated each training
step before the loss from the *global* batch (all replicas):
  mu_R  <- m mu_R  + (1 - m) mu_B
  var_R <- m var_R + (1 - m) var_B
  beta   = clip(mu_R - var_R, beta_min, beta_hat)
var_B is the unbiased variance (the released code's ``Tensor.var``); the update
is skipped when the global batch has fewer than 2 positive anchors.
"""

import keras
import tensorflow as tf

from retinamask_tf.ops.distribute import cross_replica_sum


COORDS = ("dy", "dx", "dh", "dw")  # the box deltas' coordinates, in order


def smooth_l1(abs_diff, beta):
    """Element-wise smooth L1 of ``abs_diff`` = |x| >= 0; ``beta`` broadcasts (>0)."""
    beta = tf.cast(beta, abs_diff.dtype)
    return tf.where(abs_diff < beta, 0.5 * tf.square(abs_diff) / beta, abs_diff - 0.5 * beta)


def batch_moments(abs_diff, positive):
    """Global-batch count, mean and unbiased variance of ``abs_diff`` per coordinate.

    Args:
      abs_diff: [B, N, 4] |prediction - target|.
      positive: [B, N] bool.
    Returns:
      (count scalar, mean [4], var [4]); mean/var are 0 when count < 2.
    """
    w = tf.cast(positive, tf.float32)[..., None]
    stats = tf.stack([
        tf.reduce_sum(w * abs_diff, axis=[0, 1]),
        tf.reduce_sum(w * tf.square(abs_diff), axis=[0, 1]),
        tf.fill([4], tf.reduce_sum(w)),
    ])  # [3, 4]: sum, sum of squares, count; one all-reduce for all three
    stats = cross_replica_sum(stats)
    total, total_sq, count = stats[0], stats[1], stats[2, 0]
    mean = tf.math.divide_no_nan(total, count)
    var = tf.math.divide_no_nan(total_sq - count * tf.square(mean), count - 1.0)
    ok = count >= 2.0
    return count, tf.where(ok, mean, 0.0), tf.where(ok, tf.maximum(var, 0.0), 0.0)


@keras.saving.register_keras_serializable(package="retinamask_tf")
class SelfAdjustingSmoothL1(keras.layers.Layer):
    """Stateful box loss; its running statistics are non-trainable weights.

    Every replica computes the same global-batch statistics, so the variables
    are written identically everywhere (aggregation "only_first_replica").

    A box loss (``losses.registry``): call with ``(pred_deltas [B, N, 4], target_deltas
    [B, N, 4], positive [B, N] bool)``; returns the loss *sum* over positive anchors and
    coordinates (the caller divides by 4 x number of positives). In training the
    statistics are updated first. ``summaries()``: the beta and running statistics per
    coordinate, logged with the losses.
    """

    def __init__(self, beta_hat=0.11, momentum=0.9, beta_min=1e-3, **kwargs):
        kwargs.setdefault("dtype", "float32")  # statistics stay float32 under mixed precision
        super().__init__(**kwargs)
        self.beta_hat = float(beta_hat)
        self.momentum = float(momentum)
        self.beta_min = float(beta_min)
        self.running_mean = self.add_weight(
            name="running_mean", shape=(4,), initializer=keras.initializers.Constant(self.beta_hat),
            trainable=False, dtype="float32", aggregation="only_first_replica")
        self.running_var = self.add_weight(
            name="running_var", shape=(4,), initializer="zeros", trainable=False, dtype="float32",
            aggregation="only_first_replica")

    @property
    def beta(self):
        """Current beta per coordinate [4] from the running statistics."""
        return tf.clip_by_value(tf.convert_to_tensor(self.running_mean) - self.running_var,
                                self.beta_min, self.beta_hat)

    def summaries(self):
        """{beta_dy, ..., running_mean_dy, ..., running_var_dy, ...}: float32 scalars."""
        out = {}
        for name, values in (("beta", self.beta), ("running_mean", self.running_mean),
                             ("running_var", self.running_var)):
            out.update({f"{name}_{c}": tf.convert_to_tensor(values)[i]
                        for i, c in enumerate(COORDS)})
        return out

    def call(self, pred_deltas, target_deltas, positive, training=False):
        abs_diff = tf.abs(tf.cast(pred_deltas, tf.float32) - tf.cast(target_deltas, tf.float32))
        if training:
            count, mean, var = batch_moments(tf.stop_gradient(abs_diff), positive)
            ok = count >= 2.0
            m = self.momentum
            self.running_mean.assign(tf.where(ok, m * self.running_mean + (1 - m) * mean,
                                              self.running_mean))
            self.running_var.assign(tf.where(ok, m * self.running_var + (1 - m) * var,
                                             self.running_var))
        loss = smooth_l1(abs_diff, self.beta)
        return tf.reduce_sum(loss * tf.cast(positive, tf.float32)[..., None])

    def get_config(self):
        config = super().get_config()
        config.update(beta_hat=self.beta_hat, momentum=self.momentum, beta_min=self.beta_min)
        return config


@keras.saving.register_keras_serializable(package="retinamask_tf")
class SmoothL1Loss(keras.layers.Layer):
    """Smooth L1 with a fixed ``beta``: the box loss of plain RetinaNet, with the same call
    as ``SelfAdjustingSmoothL1`` (so that either is the model's box-loss part)."""

    def __init__(self, beta=0.11, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.beta_value = float(beta)

    @property
    def beta(self):
        """beta per coordinate [4] (constant)."""
        return tf.fill([4], self.beta_value)

    def summaries(self):
        """{beta_dy, ...}: the (constant) beta per coordinate."""
        return {f"beta_{c}": self.beta[i] for i, c in enumerate(COORDS)}

    def call(self, pred_deltas, target_deltas, positive, training=False):
        abs_diff = tf.abs(tf.cast(pred_deltas, tf.float32) - tf.cast(target_deltas, tf.float32))
        loss = smooth_l1(abs_diff, self.beta)
        return tf.reduce_sum(loss * tf.cast(positive, tf.float32)[..., None])

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta_value)
        return config
