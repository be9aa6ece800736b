"""MobileNetV2 and MobileNetV3 Large/Small backbones (the Keras applications architectures,
any width multiplier) returning C3, C4, C5 at strides 8, 16, 32.

Each level is the last activation the network computes at that stride: for C3 and C4 the
expansion of the block that halves the resolution next (as torchvision's SSDLite reads
MobileNetV3), for C5 the final 1x1 convolution (1280 / 960 / 576 channels at width 1).
The layers are found by their output strides on a probe input, so that Keras' automatic
layer names (which change with every model built in a process) are never relied on.
"""

import keras

from retinamask_tf.modeling.norm import BN_MOMENTUM

APPLICATIONS = {
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small": "MobileNetV3Small",
}
PROBE = 256  # a probe side: a multiple of 32


def _application(name, alpha, weights, input_shape):
    ctor = getattr(keras.applications, APPLICATIONS[name])
    kwargs = dict(include_top=False, weights=weights, input_shape=input_shape, alpha=alpha)
    if name != "mobilenet_v2":
        kwargs["include_preprocessing"] = False  # the model normalises its input itself
    return ctor(**kwargs)


def level_layers(name, alpha=1.0):
    """Indices into the application's ``layers`` of its C3, C4 and C5 outputs (the last
    layer at strides 8, 16 and 32)."""
    probe = _application(name, alpha, None, (PROBE, PROBE, 3))
    last = {}
    for i, layer in enumerate(probe.layers):
        shape = layer.output.shape
        if len(shape) == 4 and shape[1]:
            last[PROBE // shape[1]] = i
    return [last[8], last[16], last[32]]


def build_mobilenet(name, alpha=1.0, norm="batch_norm", weights=None):
    """``keras.Model`` normalised images [B, H, W, 3] -> {"C3", "C4", "C5"} (strides 8,
    16, 32; H and W any multiples of 32). ``weights``: None (from scratch) or "imagenet"
    (Keras' files: downloaded once, or found in ``~/.keras/models``). ``norm``: batch_norm,
    or frozen (the batch norms keep their statistics and scales). Trained batch norms
    update their statistics with ``norm.BN_MOMENTUM``, as the rest of the model."""
    indices = level_layers(name, alpha)
    base = _application(name, alpha, weights, (None, None, 3))
    outputs = {f"C{level}": base.layers[i].output for level, i in zip((3, 4, 5), indices)}
    model = keras.Model(base.input, outputs, name=f"{name}_{alpha:g}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM  # Keras builds them with 0.999 (see norm.BN_MOMENTUM)
            layer.trainable = norm != "frozen"
    return model
