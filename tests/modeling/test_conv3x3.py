"""Conv3x3: the algorithm changes how a 3x3 conv computes, not its weights or results."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf import config as C
from retinamask_tf.config.schema import ConfigError
from retinamask_tf.layers.conv3x3 import Conv3x3
from retinamask_tf.modeling import factory


def _op_types(fn, x):
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("algorithm,shape,expect", [
    ("auto", (1, 64, 64, 128), True),     # 2^19 outputs of 128 channels: pays on a CPU
    ("auto", (1, 16, 16, 128), False),    # too small: direct
    ("direct", (1, 64, 64, 128), False),
    ("winograd", (1, 5, 3, 4), True),     # forced: any size
])
def test_algorithm_choice_and_same_results(algorithm, shape, expect):
    """The layer computes by Winograd exactly when the rule says so (its graph then has a
    batched matmul and no conv of the input's channel count), and its output equals a
    plain Conv2D's with the same weights (to 3e-5 of the output's scale: Winograd's
    transforms round differently from the direct conv; measured 1.1e-5 at 128 channels on
    an Intel Xeon with AMX, whose oneDNN direct conv differs from the AMD EPYC's)."""
    x = tf.constant(np.random.default_rng(0).standard_normal(shape), tf.float32)
    layer = Conv3x3(shape[-1], algorithm, bias_initializer="random_normal")
    plain = keras.layers.Conv2D(shape[-1], 3, padding="same")
    y = layer(x)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    assert [w.shape for w in layer.weights] == [w.shape for w in plain.weights]
    assert layer.uses_winograd(x.shape) is expect
    ops = _op_types(layer, x)
    assert ("BatchMatMulV2" in ops) is expect, ops
    ref = plain(x).numpy()
    assert np.abs(y.numpy() - ref).max() <= 3e-5 * np.abs(ref).max()


def test_training_graph_has_the_gradient_and_inference_graph_does_not():
    """Called with training=True the layer's gradients (input, kernel, bias) equal a plain
    Conv2D's, through the custom gradient (its IdentityN); with training=False the graph
    holds the forward ops alone (the TFLite converter lost the signature through the
    custom-gradient ops)."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.standard_normal((2, 9, 7, 3)), tf.float32)
    layer = Conv3x3(4, "winograd", bias_initializer="random_normal", activation="relu")
    plain = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    layer(x)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    r = tf.constant(rng.standard_normal((2, 9, 7, 4)), tf.float32)

    def grads(conv, **kwargs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(conv(x, **kwargs) * r)
        return tape.gradient(loss, [x] + conv.trainable_weights)

    for got, want in zip(tf.function(lambda: grads(layer, training=True))(),
                         tf.function(lambda: grads(plain))()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert "IdentityN" in _op_types(lambda t: layer(t, training=True), x)
    assert "IdentityN" not in _op_types(lambda t: layer(t, training=False), x)


def test_16_bit_policies_stay_direct():
    """16-bit layers compute directly (Winograd's rounding in 16 bits is not evaluated)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = Conv3x3(8, "winograd")
    finally:
        keras.config.set_dtype_policy(previous)
    assert not layer.uses_winograd((1, 8, 8, 8))
    assert layer(tf.zeros([1, 8, 8, 8])).dtype == tf.bfloat16


def test_bad_arguments_and_config_round_trip():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        Conv3x3(4, "fft")
    with pytest.raises(ValueError, match="strides"):
        Conv3x3(4, strides=2)
    layer = Conv3x3(4, "winograd", name="c")
    clone = Conv3x3.from_config(layer.get_config())
    assert (clone.algorithm, clone.kernel_size, clone.strides, clone.padding) == \
        ("winograd", (3, 3), (1, 1), "same")
    with pytest.raises(ConfigError, match="model.conv_algorithm"):
        C.load_config([], ["model.conv_algorithm=fft"])


def test_model_outputs_and_checkpoint_do_not_depend_on_the_algorithm(tmp_path):
    """A model built with ``winograd`` (every FPN output and head conv) and one built with
    ``direct`` have the same variables: a checkpoint of one restores into the other and
    both give the same class logits and box deltas."""
    keys = ["model.backbone.depth=18", "model.backbone.width=8", "model.backbone.weights=null",
            "model.fpn.channels=16", "model.head.channels=16", "model.head.num_convs=2",
            "model.num_classes=3", "model.mask_head.enabled=false"]
    models = {}
    for algorithm in ("winograd", "direct"):
        keras.utils.set_random_seed(0 if algorithm == "winograd" else 1)
        cfg = C.load_config([], keys + [f"model.conv_algorithm={algorithm}"])
        models[algorithm] = factory.build_model(cfg, image_size=(128, 128))
    names = {a: sorted(v.path for v in m.weights) for a, m in models.items()}
    assert names["winograd"] == names["direct"]
    ckpt = tf.train.Checkpoint(model=models["winograd"]).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=models["direct"]).read(ckpt).assert_consumed()
    images = tf.constant(np.random.default_rng(2).uniform(0, 255, (2, 128, 128, 3)), tf.float32)
    out = {a: tf.function(lambda x, m=m: m(x, training=False))(images) for a, m in models.items()}
    for key in ("cls_logits", "box_deltas"):
        ref = out["direct"][key].numpy()
        assert np.abs(out["winograd"][key].numpy() - ref).max() <= 1e-4 * np.abs(ref).max(), key
    graph_ops = _op_types(lambda x: models["winograd"](x, training=False), images)
    assert "BatchMatMulV2" in graph_ops
