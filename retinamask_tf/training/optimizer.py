"""SGD with momentum and weight decay, built from ``TrainConfig``."""

import keras

from retinamask_tf.training.schedule import WarmupStepSchedule


def build_optimizer(train_config):
    """Keras SGD (momentum, decoupled weight decay on conv/dense kernels only).

    Keras applies weight decay as ``w -= lr * wd * w`` each step; biases and
    normalisation parameters are excluded, as in the released code for biases.
    """
    t = train_config
    schedule = WarmupStepSchedule(t.base_lr, t.warmup_steps, t.warmup_factor, t.lr_drop_steps,
                                  t.lr_drop_factor)
    opt = keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum,
                               weight_decay=t.weight_decay or None)
    if t.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "running_"])
    if t.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
