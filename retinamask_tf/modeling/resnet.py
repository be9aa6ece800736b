"""ResNet-18/34/50/101 backbones (channels-last) returning C3, C4, C5."""

import keras

from retinamask_tf.layers.conv3x3 import Conv3x3
from retinamask_tf.modeling.norm import make_norm

# depth -> (block type, blocks per stage 2..5)
SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


PADDINGS = ("same", "symmetric")


def _conv_norm(x, filters, kernel, stride, norm, name, relu=True, padding="same",
               conv_algorithm="auto"):
    pad = "same"
    if padding == "symmetric" and stride > 1 and kernel > 1:
        # PyTorch's padding=k//2 on every side; TF's "same" would pad a stride-2 conv of an
        # even input at the bottom/right only, shifting its output by half an input pixel.
        x = keras.layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
        pad = "valid"
    if kernel == 3 and stride == 1:
        x = Conv3x3(filters, conv_algorithm, use_bias=False, kernel_initializer="he_normal",
                    name=name + "_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=pad, use_bias=False,
                                kernel_initializer="he_normal", name=name + "_conv")(x)
    layer = make_norm(norm, filters, name + "_norm")
    if layer is not None:
        x = layer(x)
    return keras.layers.ReLU(name=name + "_relu")(x) if relu else x


def _block(x, filters, stride, kind, norm, name, padding="same", stride_in_1x1=False,
           conv_algorithm="auto"):
    out_filters = filters * (4 if kind == "bottleneck" else 1)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_filters:
        shortcut = _conv_norm(x, out_filters, 1, stride, norm, name + "_short", relu=False)
    if kind == "bottleneck":
        # Stride on the 3x3 conv ("ResNet v1.5", torchvision) or on the first 1x1 (the
        # original ResNet v1, the MSRA weights of the released RetinaMask).
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        y = _conv_norm(x, filters, 1, s1, norm, name + "_1", padding=padding)
        y = _conv_norm(y, filters, 3, s3, norm, name + "_2", padding=padding,
                       conv_algorithm=conv_algorithm)
        y = _conv_norm(y, out_filters, 1, 1, norm, name + "_3", relu=False)
    else:
        y = _conv_norm(x, filters, 3, stride, norm, name + "_1", padding=padding,
                       conv_algorithm=conv_algorithm)
        y = _conv_norm(y, filters, 3, 1, norm, name + "_2", relu=False,
                       conv_algorithm=conv_algorithm)
    return keras.layers.ReLU(name=name + "_out")(keras.layers.Add(name=name + "_add")([y, shortcut]))


def build_resnet(depth=50, norm="frozen", width=64, freeze_stages=0, name=None, padding="same",
                 stride_in_1x1=False, conv_algorithm="auto"):
    """A functional ResNet taking normalised images [B, H, W, 3].

    Args:
      depth: 18, 34, 50 or 101.
      norm: see ``norm.make_norm``.
      width: stem channels (64 is the standard ResNet; smaller makes a thin net).
      freeze_stages: 0 none, 1 the stem, k the stem and stages 2..k.
      padding: "same" (TF) or "symmetric" (PyTorch) for the strided convs and the stem's
        max-pool; the same variables either way.
      stride_in_1x1: bottlenecks downsample in their first 1x1 conv (ResNet v1) instead
        of the 3x3 (v1.5).
      conv_algorithm: how the stride-1 3x3 convs compute (``Conv3x3``; same variables).
    Returns:
      keras.Model with outputs {"C3", "C4", "C5"} at strides 8, 16, 32.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if depth not in SPECS:
        raise ValueError(f"ResNet depth must be one of {sorted(SPECS)}, got {depth}")
    kind, repeats = SPECS[depth]
    inputs = keras.Input((None, None, 3), name="images")
    x = _conv_norm(inputs, width, 7, 2, norm, "stem", padding=padding)
    if padding == "symmetric":  # zeros act as -inf: the pool's input is a ReLU output
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="stem_pool")(x)
    else:
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    outputs = {}
    for stage, blocks in enumerate(repeats, start=2):
        filters = width * 2 ** (stage - 2)
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 2) else 1
            x = _block(x, filters, stride, kind, norm, f"res{stage}_{b}", padding, stride_in_1x1,
                       conv_algorithm)
        if stage >= 3:
            outputs[f"C{stage}"] = x
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}")
    if freeze_stages:
        prefixes = ["stem"] + [f"res{s}_" for s in range(2, freeze_stages + 1)]
        for layer in model.layers:
            if any(layer.name.startswith(p) for p in prefixes):
                layer.trainable = False
    return model


def build_keras_applications_resnet(depth, norm="frozen", freeze_stages=0, weights="imagenet"):
    """keras.applications ResNet-50/101 (ImageNet weights, caffe preprocessing) as C3-C5.

    Used for ``backbone.weights: imagenet``; downloads the weights on first use,
    so it needs internet access.
    """
    apps = {50: (keras.applications.ResNet50, (4, 6, 3)),
            101: (keras.applications.ResNet101, (4, 23, 3))}
    if depth not in apps:
        raise ValueError(f"ImageNet weights are available for ResNet-50/101, not {depth}")
    ctor, (n3, n4, n5) = apps[depth]
    base = ctor(include_top=False, weights=weights, input_shape=(None, None, 3))
    outputs = {"C3": base.get_layer(f"conv3_block{n3}_out").output,
               "C4": base.get_layer(f"conv4_block{n4}_out").output,
               "C5": base.get_layer(f"conv5_block{n5}_out").output}
    model = keras.Model(base.input, outputs, name=f"resnet{depth}_imagenet")
    prefixes = ["conv1"] + [f"conv{s}_" for s in range(2, freeze_stages + 1)] if freeze_stages else []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and norm == "frozen":
            layer.trainable = False
        if any(layer.name.startswith(p) for p in prefixes):
            layer.trainable = False
    return model
