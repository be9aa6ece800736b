"""Feature pyramid network producing P3..P7 from C3, C4, C5."""

import keras
import tensorflow as tf

from retinamask_tf.layers.conv3x3 import Conv3x3
from retinamask_tf.modeling.norm import make_norm
from retinamask_tf.modeling.resnet import PADDINGS
from retinamask_tf.modeling.tracking import track_sublayers


@keras.saving.register_keras_serializable(package="retinamask_tf")
class FPN(keras.layers.Layer):
    """Lateral 1x1 + output 3x3 convs, nearest x2 top-down; P6 (stride-2 3x3 conv on
    C5 or P5) and P7 (stride-2 3x3 conv on ReLU(P6)).

    Call with ``{"C3": [B, H/8, W/8, c3], "C4": ..., "C5": ...}``; returns
    ``{"P3": [B, H/8, W/8, channels], ..., "P7": [B, H/128, W/128, channels]}``.
    Input sizes must be multiples of 2^max_level (the parser pads them so). ``padding``
    "same" (TF) or "symmetric" (PyTorch: one pixel on every side) for the stride-2 P6/P7
    convs. ``conv_algorithm``: how the stride-1 3x3 output convs compute
    (:class:`~retinamask_tf.layers.conv3x3.Conv3x3`; same variables). ``separable``: the
    3x3 convs (outputs, P6, P7) are depthwise-separable (a 3x3 depthwise conv then a 1x1
    conv), the light neck of mobile detectors.
    """

    def __init__(self, channels=256, p6_from="p5", group_norm=False, min_level=3, max_level=7,
                 padding="same", conv_algorithm="auto", separable=False, **kwargs):
        super().__init__(**kwargs)
        if p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from must be 'c5' or 'p5', got {p6_from!r}")
        if min_level != 3 or not 5 <= max_level <= 7:
            raise ValueError("FPN supports min_level 3 and max_level 5..7")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        self.channels = int(channels)
        self.p6_from = p6_from
        self.group_norm = bool(group_norm)
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.conv_algorithm = conv_algorithm
        self.separable = bool(separable)
        norm = "group_norm" if self.group_norm else "none"

        def conv(kernel, stride, name):
            pad = "valid" if stride > 1 and padding == "symmetric" else "same"
            if kernel == 3 and self.separable:
                return keras.layers.SeparableConv2D(
                    self.channels, 3, strides=stride, padding=pad, use_bias=not self.group_norm,
                    depthwise_initializer=keras.initializers.HeUniform(),
                    pointwise_initializer=keras.initializers.HeUniform(), name=name)
            if kernel == 3 and stride == 1:
                return Conv3x3(self.channels, conv_algorithm, use_bias=not self.group_norm,
                               kernel_initializer=keras.initializers.HeUniform(), name=name)
            return keras.layers.Conv2D(self.channels, kernel, strides=stride, padding=pad,
                                       use_bias=not self.group_norm,
                                       kernel_initializer=keras.initializers.HeUniform(),
                                       name=name)

        self.lateral = {f"C{l}": conv(1, 1, f"lateral_c{l}") for l in (3, 4, 5)}
        self.output_convs = {f"P{l}": conv(3, 1, f"output_p{l}") for l in (3, 4, 5)}
        self.extra = {f"P{l}": conv(3, 2, f"extra_p{l}") for l in range(6, self.max_level + 1)}
        self.norms = {name: make_norm(norm, self.channels, f"gn_{name}")
                      for name in ["lat3", "lat4", "lat5", "out3", "out4", "out5"]
                      + [f"p{l}" for l in range(6, self.max_level + 1)]}
        for prefix in ("lateral", "output_convs", "extra", "norms"):
            track_sublayers(self, "tracked_" + prefix, getattr(self, prefix))

    def _norm(self, key, x):
        layer = self.norms[key]
        return x if layer is None else layer(x)

    def call(self, features):
        lat = {l: self._norm(f"lat{l}", self.lateral[f"C{l}"](features[f"C{l}"])) for l in (3, 4, 5)}
        top = lat[5]
        merged = {5: top}
        for l in (4, 3):
            top = lat[l] + tf.repeat(tf.repeat(top, 2, axis=1), 2, axis=2)
            merged[l] = top
        out = {f"P{l}": self._norm(f"out{l}", self.output_convs[f"P{l}"](merged[l]))
               for l in (3, 4, 5)}
        prev = features["C5"] if self.p6_from == "c5" else out["P5"]
        for l in range(6, self.max_level + 1):
            if l > 6:
                prev = tf.nn.relu(prev)
            if self.padding == "symmetric":
                prev = tf.pad(prev, [[0, 0], [1, 1], [1, 1], [0, 0]])
            prev = self._norm(f"p{l}", self.extra[f"P{l}"](prev))
            out[f"P{l}"] = prev
        return out

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, p6_from=self.p6_from, group_norm=self.group_norm,
                      min_level=self.min_level, max_level=self.max_level, padding=self.padding,
                      conv_algorithm=self.conv_algorithm, separable=self.separable)
        return config
