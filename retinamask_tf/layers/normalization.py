"""Input normalisation inside the model, so exported graphs take raw pixels."""

import keras
import tensorflow as tf

from retinamask_tf.ops.pixels import DETECTRON_MEAN, IMAGENET_MEAN, IMAGENET_STD

MODES = ("imagenet", "caffe", "detectron_caffe", "inception")


@keras.saving.register_keras_serializable(package="retinamask_tf")
class ImageNormalization(keras.layers.Layer):
    """RGB 0..255 images [B, H, W, 3] -> normalised float.

    mode "imagenet": (x - mean) / std per channel (our own backbones);
    (torchvision's ``x / 255`` normalised by mean/std is the same map);
    mode "caffe": RGB -> BGR, minus the mean, no scaling (keras.applications
    ResNet ImageNet weights expect this);
    mode "detectron_caffe": RGB -> BGR minus (102.9801, 115.9465, 122.7717), no scaling
    (the MSRA weights of the released RetinaMask);
    mode "inception": x / 127.5 - 1, RGB in [-1, 1] (keras.applications MobileNets).
    """

    def __init__(self, mode="imagenet", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"ImageNormalization mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        mean = tf.constant(IMAGENET_MEAN, x.dtype)
        if self.mode == "caffe":
            return x[..., ::-1] - mean[::-1]
        if self.mode == "inception":
            return x / 127.5 - 1.0
        if self.mode == "detectron_caffe":
            return x[..., ::-1] - tf.constant(DETECTRON_MEAN[::-1], x.dtype)
        return (x - mean) / tf.constant(IMAGENET_STD, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
