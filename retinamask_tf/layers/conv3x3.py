"""A 3x3 stride-1 "same" Conv2D that can compute by Winograd's F(4x4, 3x3)."""

import keras
import tensorflow as tf

from retinamask_tf.ops.winograd import winograd_conv3x3, winograd_pays

CONV_ALGORITHMS = ("auto", "direct", "winograd")


def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="retinamask_tf")
class Conv3x3(keras.layers.Conv2D):
    """``keras.layers.Conv2D(filters, 3, padding="same")`` with a choice of algorithm.

    The variables (``kernel`` [3, 3, Cin, Cout], ``bias``) and the results are a plain
    Conv2D's, so checkpoints do not depend on the algorithm. ``algorithm``:

    - ``direct``: the framework's convolution;
    - ``winograd``: F(4x4, 3x3) (:mod:`retinamask_tf.ops.winograd`) whenever the layer
      computes in float32 and the input's spatial size is static;
    - ``auto``: ``winograd`` where it is measured to be faster than oneDNN's direct
      convolution on a CPU (:func:`winograd_pays`) and no GPU is visible when the graph is
      traced; ``direct`` otherwise.

    Input [B, H, W, Cin] -> [B, H, W, filters].
    """

    def __init__(self, filters, algorithm="auto", **kwargs):
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
        for key, value in (("kernel_size", 3), ("strides", 1), ("padding", "same")):
            if key in kwargs and kwargs.pop(key) not in (value, (value, value), [value, value]):
                raise ValueError(f"Conv3x3 has {key}={value!r}")
        super().__init__(filters, 3, strides=1, padding="same", **kwargs)
        self.algorithm = algorithm

    def uses_winograd(self, input_shape):
        """Whether a call on ``input_shape`` computes by Winograd (see the class doc)."""
        h, w = input_shape[1], input_shape[2]
        if self.algorithm == "direct" or h is None or w is None:
            return False
        if self.compute_dtype != "float32":
            return False
        if self.algorithm == "winograd":
            return True
        return winograd_pays(h, w, input_shape[-1], self.filters) and not _gpu_visible()

    def call(self, inputs, training=None):
        if not self.uses_winograd(inputs.shape):
            return super().call(inputs)
        # training=False (evaluation, the exports): the forward ops alone, without the
        # custom-gradient ops (through which the TFLite converter lost the signature).
        outputs = winograd_conv3x3(inputs, self.kernel, gradient=training is not False)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key, None)
        config["algorithm"] = self.algorithm
        return config
