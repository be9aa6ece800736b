"""MobileNetV2 and MobileNetV3 Large/Small backbones (the Keras applications architectures,
any width multiplier) returning C3, C4, C5 at strides 8, 16, 32.

Each level is the last activation the network computes at that stride: for C3 and C4 the
expansion of the block that halves the resolution next (as torchvision's SSDLite reads
MobileNetV3), for C5 the final 1x1 convolution (1280 / 960 / 576 channels at width 1).
The layers are found by their output strides on a probe input, so that Keras' automatic
layer names (which change with every model built in a process) are never relied on.

Padding: Keras pads a stride-2 convolution of an even input at the bottom/right only
("same", and ``ZeroPadding2D((k//2 - 1, k//2))`` before the depthwise ones); PyTorch pads
k//2 on every side. ``padding="symmetric"`` rebuilds the network with PyTorch's padding
(same layers, names and weights; what torchvision's ImageNet weights need).
"""

import keras
import tensorflow as tf

from retinamask_tf.modeling.norm import BN_MOMENTUM

APPLICATIONS = {
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small": "MobileNetV3Small",
}
PROBE = 256  # a probe side: a multiple of 32


def _application(name, alpha, weights, input_shape, minimalistic=False):
    ctor = getattr(keras.applications, APPLICATIONS[name])
    kwargs = dict(include_top=False, weights=weights, input_shape=input_shape, alpha=alpha)
    if name != "mobilenet_v2":
        kwargs["include_preprocessing"] = False  # the model normalises its input itself
        kwargs["minimalistic"] = minimalistic
    return ctor(**kwargs)


def level_layers(name, alpha=1.0, minimalistic=False):
    """Indices into the application's ``layers`` of its C3, C4 and C5 outputs (the last
    layer at strides 8, 16 and 32)."""
    probe = _application(name, alpha, None, (PROBE, PROBE, 3), minimalistic)
    last = {}
    for i, layer in enumerate(probe.layers):
        shape = layer.output.shape
        if len(shape) == 4 and shape[1]:
            last[PROBE // shape[1]] = i
    return [last[8], last[16], last[32]]


@keras.saving.register_keras_serializable(package="retinamask_tf")
class SymmetricPadConv2D(keras.layers.Conv2D):
    """A strided Conv2D padded k // 2 on every side (PyTorch's padding), then "valid"."""

    def call(self, inputs):
        p = self.kernel_size[0] // 2
        return super().call(tf.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]))


def _symmetric(layer):
    """``keras.models.clone_model``'s clone function for PyTorch's padding: the explicit
    pads before stride-2 depthwise convs become k // 2 on every side, the strided "same"
    convs (the stem) ``SymmetricPadConv2D``; every other layer is cloned as it is."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.ZeroPadding2D):
        p = layer.padding[0][1]  # Keras: (k // 2 - 1, k // 2)
        config["padding"] = ((p, p), (p, p))
    elif type(layer) is keras.layers.Conv2D and layer.padding == "same" and max(layer.strides) > 1:
        config["padding"] = "valid"
        return SymmetricPadConv2D.from_config(config)
    return layer.__class__.from_config(config)


def build_mobilenet(name, alpha=1.0, norm="batch_norm", weights=None, padding="same",
                    minimalistic=False):
    """``keras.Model`` normalised images [B, H, W, 3] -> {"C3", "C4", "C5"} (strides 8,
    16, 32; H and W any multiples of 32). ``weights``: None (from scratch) or "imagenet"
    (Keras' files: downloaded once, or found in ``~/.keras/models``). ``norm``: batch_norm,
    or frozen (the batch norms keep their statistics and scales). Trained batch norms
    update their statistics with ``norm.BN_MOMENTUM``, as the rest of the model.
    ``padding``: "same" (Keras') or "symmetric" (PyTorch's; not with Keras' weights).
    ``minimalistic``: MobileNetV3 without squeeze-excite and hard-swish, 3x3 kernels only."""
    indices = level_layers(name, alpha, minimalistic)
    base = _application(name, alpha, weights, (None, None, 3), minimalistic)
    if padding == "symmetric":
        if weights is not None:
            raise ValueError("Keras' ImageNet MobileNets use TF padding: symmetric padding "
                             "needs weights=None")
        base = keras.models.clone_model(base, clone_function=_symmetric)
    outputs = {f"C{level}": base.layers[i].output for level, i in zip((3, 4, 5), indices)}
    model = keras.Model(base.input, outputs,
                        name=f"{name}{'_minimalistic' if minimalistic else ''}_{alpha:g}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM  # Keras builds them with 0.999 (see norm.BN_MOMENTUM)
            layer.trainable = norm != "frozen"
    return model
