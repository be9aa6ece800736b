"""The backbone registry: every name of the schema builds C3-C5 at strides 8/16/32; the
MobileNets have the published channel counts, train inside RetinaMask and export to TFLite
with builtin ops only; the light neck and heads (separable convs, per-level BatchNorm that
folds into the convs at export)."""

import typing

import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf import config as C
from retinamask_tf.config.schema import BackboneName
from retinamask_tf.layers.normalization import ImageNormalization
from retinamask_tf.modeling import backbones
from retinamask_tf.modeling.mobilenet import build_mobilenet
from retinamask_tf.ops import pixels
from tests.conftest import tiny_config

# Channels of the expansion layers before the stride-16 and stride-32 blocks and of the
# last 1x1 conv at width 1 (MobileNetV2: Sandler et al. 2018, Table 2; MobileNetV3: Howard
# et al. 2019, Tables 1-2).
CHANNELS = {"mobilenet_v2": (192, 576, 1280), "mobilenet_v3_large": (240, 672, 960),
            "mobilenet_v3_small": (96, 288, 576)}


def test_every_schema_name_has_a_builder_and_a_normalisation():
    names = set(typing.get_args(BackboneName))
    assert set(backbones.BACKBONES) == names
    assert set(pixels.IMAGENET_WEIGHTS_NORM) == names


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_mobilenet_levels_and_channels(name):
    """C3-C5 at strides 8, 16, 32 of a non-square input, with the published channels; a
    second model built in the same process (other automatic layer names) agrees."""
    for _ in range(2):
        model = build_mobilenet(name)
        out = model(tf.zeros((1, 96, 160, 3)))
        assert [tuple(out[f"C{level}"].shape) for level in (3, 4, 5)] == [
            (1, 12, 20, CHANNELS[name][0]), (1, 6, 10, CHANNELS[name][1]),
            (1, 3, 5, CHANNELS[name][2])]
    frozen = build_mobilenet(name, norm="frozen")
    bns = [layer for layer in frozen.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)


def test_minimalistic_mobilenet_v3_has_no_hard_swish_or_squeeze_excite():
    """Keras' minimalistic MobileNetV3-Large: the same strides and published channels, built
    of ReLUs, no squeeze-excite (global pooling) and no 5x5 kernels."""
    def parts(model):  # hard-swish: Activation layers; the SE's hard-sigmoid: ReLU6(x + 3) / 6
        layers = model.layers
        return (sum((isinstance(layer, tf.keras.layers.ReLU) and layer.max_value == 6)
                    or (isinstance(layer, tf.keras.layers.Activation)
                        and "hard" in getattr(layer.activation, "__name__", ""))
                    for layer in layers),
                sum(isinstance(layer, tf.keras.layers.GlobalAveragePooling2D) for layer in layers),
                {layer.kernel_size for layer in layers
                 if isinstance(layer, tf.keras.layers.DepthwiseConv2D)})

    model = build_mobilenet("mobilenet_v3_large", minimalistic=True)
    out = model(tf.zeros((1, 64, 64, 3)))
    assert [out[f"C{level}"].shape[-1] for level in (3, 4, 5)] == list(CHANNELS["mobilenet_v3_large"])
    assert parts(model) == (0, 0, {(3, 3)})
    full_relu6, full_pools, full_kernels = parts(build_mobilenet("mobilenet_v3_large"))
    assert full_relu6 > 20 and full_pools == 8 and full_kernels == {(3, 3), (5, 5)}


def test_mobilenet_batch_norm_statistics_move_at_our_momentum():
    """One training call moves a running mean by (1 - 0.9) of the batch mean (Keras'
    applications build their batch norms with momentum 0.999)."""
    model = build_mobilenet("mobilenet_v3_small", 0.5)
    bn = next(layer for layer in model.layers
              if isinstance(layer, tf.keras.layers.BatchNormalization))
    stem = tf.keras.Model(model.input, bn.input)  # the model up to that batch norm
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    batch_mean = tf.reduce_mean(stem(x, training=True), [0, 1, 2]).numpy()
    model(x, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * batch_mean, rtol=1e-4, atol=1e-6)


def test_inception_normalisation_and_auto_rule():
    x = ImageNormalization("inception")(tf.constant([[[[0.0, 127.5, 255.0]]]]))
    np.testing.assert_allclose(x.numpy(), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)
    b = C.BackboneConfig
    assert pixels.resolve_norm("auto", b(name="mobilenet_v3_large", weights="imagenet")) == "inception"
    assert pixels.resolve_norm("auto", b(name="mobilenet_v3_large")) == "imagenet"
    assert pixels.resolve_norm("auto", b(weights="imagenet")) == "caffe"


@pytest.mark.parametrize("override,key", [
    ("model.backbone.alpha=0.5", "model.backbone.alpha"),  # a ResNet has no width multiplier
    ("model.backbone.name=mobilenet_v2 model.backbone.norm=group_norm", "model.backbone.norm"),
    ("model.backbone.name=mobilenet_v3_small model.backbone.freeze_stages=2",
     "model.backbone.freeze_stages"),
    ("model.backbone.name=mobilenet_v3_large model.backbone.weights=imagenet "
     "model.backbone.alpha=0.5", "model.backbone.alpha"),
    ("model.backbone.minimalistic=true", "model.backbone.minimalistic"),  # resnet
    ("model.backbone.name=mobilenet_v2 model.backbone.minimalistic=true",
     "model.backbone.minimalistic"),
    ("model.backbone.name=mobilenet_v3_large model.backbone.minimalistic=true "
     "model.backbone.weights=imagenet model.backbone.alpha=0.75", "model.backbone.alpha"),
])
def test_backbone_keys_that_do_not_fit_are_named(override, key):
    with pytest.raises(C.ConfigError, match=key.replace(".", r"\.")):
        C.load_config([], override.split())


def test_a_mobilenet_retinamask_trains_and_exports(tiny_shapes, tmp_path):
    """RetinaMask on MobileNetV3-Small with the separable neck and heads: the loss of one
    batch falls over 20 steps (by 12% on an Intel Xeon, 3.54 -> 3.13 over the first and
    last three; the bar is 5%), and the detection-only TFLite file holds builtin ops only."""
    from retinamask_tf.export import litert_runner, tflite
    from retinamask_tf.training.trainer import Trainer
    config = tiny_config(tiny_shapes, {"model.backbone.name": "mobilenet_v3_small",
                                       "model.backbone.alpha": 0.75, "model.fpn.separable": True,
                                       "model.head.separable": True,
                                       "model.head.batch_norm": True, "train.steps": 20,
                                       "train.base_lr": 0.02, "train.clip_grad_norm": 10.0,
                                       "train.checkpoint_every": 20})
    trainer = Trainer(config, str(tmp_path / "run"))
    batch = next(trainer.iterator)
    trainer.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    step = trainer._make_step_fn()
    losses = [float(step(trainer.iterator)["total_loss"]) for _ in range(20)]
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.95 * np.mean(losses[:3]), losses
    trainer.save()
    path = tflite.export_tflite(str(tmp_path / "run"), str(tmp_path / "tflite"), ["float32"],
                                progress=None)["float32"]
    interpreter = litert_runner.interpreter_class()(model_path=path)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "NON_MAX_SUPPRESSION_V5" in ops and "DEPTHWISE_CONV_2D" in ops, ops
    assert not [op for op in ops if op.startswith(("Flex", "Custom"))], ops
    det = litert_runner.LiteRTPredictor(path)(np.full((100, 140, 3), 90, np.uint8))
    assert det.boxes.shape[1] == 4 and np.isfinite(det.boxes).all()


def _tflite_ops(config):
    """{op name: count} of the float32 TFLite detector of an untrained ``config`` model."""
    from ai_edge_litert.interpreter import Interpreter

    from retinamask_tf.export import tflite
    from retinamask_tf.modeling import factory
    model = factory.build_model(C.replace(config, **{"model.mask_head.enabled": False}))
    data = tflite.convert(tflite.TFLiteDetector(model, list(range(1, 4))), "float32")
    counts = {}
    for op in Interpreter(model_content=data)._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def test_separable_heads_with_per_level_batch_norm(tmp_path):
    """Separable towers share their convs over the levels and keep a BatchNorm per level
    and conv; in the TFLite file those norms are folded away: the same ops, op for op, as
    the same network without them."""
    from retinamask_tf.modeling.heads import RetinaNetHead
    head = RetinaNetHead(3, 9, 2, 16, min_level=3, max_level=5, separable=True, batch_norm=True)
    feats = {f"P{l}": tf.random.normal((2, 2 ** (8 - l), 2 ** (8 - l), 16), seed=l)
             for l in (3, 4, 5)}
    out = head(feats, training=True)
    assert out["cls_logits"].shape == (2, 9 * (32 * 32 + 16 * 16 + 8 * 8), 3)
    bns = [w for w in head.weights if "moving_mean" in w.path]
    assert len(bns) == 2 * 2 * 3  # towers x convs x levels
    means = {w.path: w.numpy() for w in bns}
    assert len({tuple(np.round(v, 6)) for v in means.values()}) == len(means)  # per level
    separable = [w for w in head.weights if "depthwise_kernel" in w.path]
    assert len(separable) == 2 * 2 + 2  # tower convs + the two predictors, shared
    base = ["model.num_classes=3", "data.short_side=128", "data.long_side=128",
            "anchors.max_level=5", "model.backbone.name=mobilenet_v3_small",
            "model.fpn.channels=16", "model.fpn.separable=true", "model.head.channels=16",
            "model.head.num_convs=2", "model.head.separable=true"]
    with_bn = _tflite_ops(C.load_config([], base + ["model.head.batch_norm=true"]))
    without = _tflite_ops(C.load_config([], base))
    assert with_bn == without, (with_bn, without)
    assert with_bn["DEPTHWISE_CONV_2D"] >= 6 + 3
