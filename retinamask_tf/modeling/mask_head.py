"""The RetinaMask mask head (docs/faithfulness.md: mask branch)."""

import keras
import tensorflow as tf

from retinamask_tf.layers.depth_to_space_deconv import DepthToSpaceDeconv
from retinamask_tf.modeling.norm import make_norm
from retinamask_tf.modeling.tracking import track_sublayers


@keras.saving.register_keras_serializable(package="retinamask_tf")
class MaskHead(keras.layers.Layer):
    """``num_convs`` x (conv3x3 ``channels`` [+ GroupNorm] + ReLU), ConvTranspose 2x2
    stride 2 + ReLU (computed as a 1x1 conv and depth_to_space, ``DepthToSpaceDeconv``),
    conv1x1 to ``num_classes`` class-specific mask logits.

    Call with RoI features [N, S, S, C]; returns logits [N, 2S, 2S, num_classes].
    Initialisation as the released code: He normal (fan out) kernels, zero biases.
    """

    def __init__(self, num_classes, num_convs=4, channels=256, group_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_convs = int(num_convs)
        self.channels = int(channels)
        self.group_norm = bool(group_norm)

        def init():  # one per layer (one unseeded Keras 3 initializer repeats its values)
            return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                                      distribution="untruncated_normal")

        self.convs = [keras.layers.Conv2D(self.channels, 3, padding="same", kernel_initializer=init(),
                                          use_bias=not self.group_norm, name=f"mask_conv{i}")
                      for i in range(self.num_convs)]
        norm = "group_norm" if self.group_norm else "none"
        self.norms = [make_norm(norm, self.channels, f"mask_gn{i}") for i in range(self.num_convs)]
        track_sublayers(self, "tracked_convs", self.convs)
        track_sublayers(self, "tracked_norms", self.norms)
        self.upsample = DepthToSpaceDeconv(self.channels, 2, kernel_initializer=init(),
                                           name="mask_deconv")
        self.predictor = keras.layers.Conv2D(self.num_classes, 1, kernel_initializer=init(),
                                             name="mask_pred", dtype="float32")  # float32 logits

    def call(self, roi_features):
        x = roi_features
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            if norm is not None:
                x = norm(x)
            x = tf.nn.relu(x)
        return self.predictor(tf.nn.relu(self.upsample(x)))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_convs=self.num_convs,
                      channels=self.channels, group_norm=self.group_norm)
        return config
