"""RetinaNet class and box heads, shared across pyramid levels."""

import math

import keras
import tensorflow as tf

from retinamask_tf.layers.conv3x3 import Conv3x3
from retinamask_tf.modeling.norm import make_norm
from retinamask_tf.modeling.tracking import track_sublayers


@keras.saving.register_keras_serializable(package="retinamask_tf")
class RetinaNetHead(keras.layers.Layer):
    """Class tower + box tower, weights shared over levels.

    Each tower: ``num_convs`` x (conv3x3 ``channels`` [+ GroupNorm or BatchNorm] + ReLU),
    then a conv3x3 predictor: A*K logits (bias -log((1 - p) / p)) or A*4 deltas
    (class-agnostic). Convs initialised N(0, 0.01), biases 0. ``conv_algorithm``: how the
    3x3 convs compute (:class:`~retinamask_tf.layers.conv3x3.Conv3x3`; same variables).
    ``separable``: every 3x3 conv (towers and predictors) is depthwise-separable, a 3x3
    depthwise conv then a 1x1 conv (SSDLite's and EfficientDet's light heads; the
    depthwise kernels start at variance scaling, the 1x1 at N(0, 0.01)). ``batch_norm``:
    a BatchNorm after each tower conv, one per pyramid level (the convs are shared, the
    statistics are not, as EfficientDet does); at export it folds into the convs.

    Call with ``{"P3": [B, H3, W3, C], ...}``; returns
    ``{"cls_logits": [B, N, K], "box_deltas": [B, N, 4]}`` with N = sum over levels
    of H_l * W_l * A, flattened in (level, y, x, anchor) order like the anchors.
    """

    def __init__(self, num_classes, num_anchors=9, num_convs=4, channels=256, group_norm=False,
                 prior_prob=0.01, min_level=3, max_level=7, conv_algorithm="auto",
                 separable=False, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)
        self.num_convs = int(num_convs)
        self.channels = int(channels)
        self.group_norm = bool(group_norm)
        self.prior_prob = float(prior_prob)
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.conv_algorithm = conv_algorithm
        self.separable = bool(separable)
        self.batch_norm = bool(batch_norm)
        if self.group_norm and self.batch_norm:
            raise ValueError("the head's towers take GroupNorm or BatchNorm, not both")
        levels = range(self.min_level, self.max_level + 1)

        def init():
            # A new initializer per layer: Keras 3 draws the same values from one unseeded
            # instance on every call, which started all eight tower convs identical.
            return keras.initializers.RandomNormal(stddev=0.01)

        def conv3x3(filters, name, use_bias=True, **kwargs):
            if self.separable:
                return keras.layers.SeparableConv2D(
                    filters, 3, padding="same", use_bias=use_bias, name=name,
                    depthwise_initializer=keras.initializers.VarianceScaling(),
                    pointwise_initializer=init(), **kwargs)
            return Conv3x3(filters, conv_algorithm, kernel_initializer=init(),
                           use_bias=use_bias, name=name, **kwargs)

        def tower(prefix):
            convs = [conv3x3(self.channels, f"{prefix}_conv{i}",
                             use_bias=not (self.group_norm or self.batch_norm))
                     for i in range(self.num_convs)]
            if self.batch_norm:  # {level: [norm per conv]}
                norms = {l: [make_norm("batch_norm", self.channels, f"{prefix}_bn{i}_p{l}")
                             for i in range(self.num_convs)] for l in levels}
            else:
                norm = "group_norm" if self.group_norm else "none"
                shared = [make_norm(norm, self.channels, f"{prefix}_gn{i}")
                          for i in range(self.num_convs)]
                norms = {l: shared for l in levels}
            return convs, norms

        self.cls_convs, self.cls_norms = tower("cls")
        self.box_convs, self.box_norms = tower("box")
        for name in ("cls", "box"):  # the order of the weights (and of checkpoints) as before
            track_sublayers(self, f"tracked_{name}_convs", getattr(self, f"{name}_convs"))
            per_level = getattr(self, f"{name}_norms")
            norms = per_level[self.min_level] if not self.batch_norm else [
                n for l in levels for n in per_level[l]]
            track_sublayers(self, f"tracked_{name}_norms", norms)
        bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        self.cls_pred = conv3x3(self.num_anchors * self.num_classes, "cls_pred",
                                bias_initializer=keras.initializers.Constant(bias))
        # Under a mixed policy the class logits are computed in 16 bits (the model's largest
        # conv) and cast to float32 for the losses and post-processing. The box deltas'
        # conv stays float32 (at 80 classes it does 1/20 of the class conv's work), so
        # box coordinates get no 16-bit rounding of their own.
        self.box_pred = conv3x3(self.num_anchors * 4, "box_pred", dtype="float32")

    @staticmethod
    def _run_tower(x, convs, norms, training=None):
        for conv, norm in zip(convs, norms):
            x = conv(x)
            if norm is not None:
                x = norm(x, training=training)
            x = tf.nn.relu(x)
        return x

    def call(self, features, training=None):
        cls_out, box_out = [], []
        for level in range(self.min_level, self.max_level + 1):
            x = features[f"P{level}"]
            batch = tf.shape(x)[0]
            cls = self.cls_pred(self._run_tower(x, self.cls_convs, self.cls_norms[level],
                                                training))
            box = self.box_pred(self._run_tower(x, self.box_convs, self.box_norms[level],
                                                training))
            cls_out.append(tf.reshape(cls, [batch, -1, self.num_classes]))
            box_out.append(tf.reshape(box, [batch, -1, 4]))
        return {"cls_logits": tf.cast(tf.concat(cls_out, axis=1), tf.float32),
                "box_deltas": tf.concat(box_out, axis=1)}

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_anchors=self.num_anchors,
                      num_convs=self.num_convs, channels=self.channels,
                      group_norm=self.group_norm, prior_prob=self.prior_prob,
                      min_level=self.min_level, max_level=self.max_level,
                      conv_algorithm=self.conv_algorithm, separable=self.separable,
                      batch_norm=self.batch_norm)
        return config
