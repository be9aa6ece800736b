"""``Conv2DTranspose`` with kernel = stride, computed by ``ops.depth_to_space_deconv``."""

import keras
from keras import ops

from retinamask_tf.ops.depth_to_space_deconv import depth_to_space_deconv


@keras.saving.register_keras_serializable(package="retinamask_tf")
class DepthToSpaceDeconv(keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose(filters, k, strides=k)`` (padding "valid", channels
    last) computed as a 1x1 convolution and ``depth_to_space``: the same variables
    (``kernel`` [k, k, filters, C_in], ``bias``) and results, without the
    ``TRANSPOSE_CONV`` op that LiteRT runs slowly in int8.

    Input [B, H, W, C_in] -> [B, k H, k W, filters].
    """

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs.setdefault("strides", kernel_size)
        super().__init__(filters, kernel_size, **kwargs)
        k = self.kernel_size[0]
        if (self.kernel_size != (k, k) or self.strides != (k, k) or self.padding != "valid"
                or self.data_format != "channels_last" or self.output_padding is not None
                or self.dilation_rate != (1, 1)):
            raise ValueError(
                "DepthToSpaceDeconv needs a square kernel equal to its strides, padding "
                f"'valid', channels_last, no output_padding or dilation; got kernel_size="
                f"{self.kernel_size}, strides={self.strides}, padding={self.padding!r}, "
                f"data_format={self.data_format!r}, output_padding={self.output_padding}, "
                f"dilation_rate={self.dilation_rate}")

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        outputs = depth_to_space_deconv(inputs, kernel)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
