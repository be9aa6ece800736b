"""Learning-rate schedule: linear warm-up then step drops, as the released code's."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="retinamask_tf")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * warm(step) * drop_factor^(number of drop_steps <= step).

    warm rises linearly from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``.
    """

    def __init__(self, base_lr, warmup_steps=500, warmup_factor=1.0 / 3.0, drop_steps=(),
                 drop_factor=0.1):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.drop_steps = tuple(int(s) for s in drop_steps)
        self.drop_factor = float(drop_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.warmup_steps > 0:
            alpha = tf.minimum(step / self.warmup_steps, 1.0)
            warm = self.warmup_factor * (1.0 - alpha) + alpha
        else:
            warm = 1.0
        drops = tf.zeros([], tf.float32)
        for s in self.drop_steps:
            drops += tf.cast(step >= s, tf.float32)
        return self.base_lr * warm * tf.pow(self.drop_factor, drops)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "warmup_factor": self.warmup_factor, "drop_steps": list(self.drop_steps),
                "drop_factor": self.drop_factor}
