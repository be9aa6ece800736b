"""The fused inference BatchNorm equals Keras' BatchNormalization."""

import keras
import numpy as np
import tensorflow as tf

from retinamask_tf.modeling.norm import FusedInferenceBatchNorm, make_norm


def _pair(shape):
    rng = np.random.default_rng(0)
    a, b = keras.layers.BatchNormalization(epsilon=1e-5), FusedInferenceBatchNorm(epsilon=1e-5)
    a.build(shape)
    b.build(shape)
    for va, vb in zip(a.weights, b.weights, strict=True):
        value = rng.uniform(0.5, 2.0, va.shape).astype(np.float32)
        va.assign(value)
        vb.assign(value)
    return a, b, rng.normal(size=shape).astype(np.float32) * 3


def test_fused_inference_equals_keras_and_trains_like_it():
    a, b, x = _pair((2, 8, 8, 16))
    np.testing.assert_allclose(b(x, training=False), a(x, training=False), atol=2e-6)
    # Trainable layer in training mode: Keras' own path (batch statistics, moving averages).
    np.testing.assert_allclose(b(x, training=True), a(x, training=True), atol=2e-6)
    np.testing.assert_allclose(b.moving_mean.numpy(), a.moving_mean.numpy(), atol=1e-6)
    # Frozen (the "frozen" norm): inference statistics even when training, with gradients
    # for the input, gamma and beta equal to Keras'.
    a.trainable = b.trainable = False
    xt = tf.constant(x)
    grads = []
    for layer in (a, b):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * y)
        grads.append(tape.gradient(loss, [xt, layer.gamma, layer.beta]))
    for ga, gb in zip(*grads):
        np.testing.assert_allclose(gb, ga, rtol=1e-5, atol=1e-4)
    # A 2-D input (not the fused op's layout) falls back to Keras' path.
    c, d, v = _pair((5, 16))
    np.testing.assert_allclose(d(v, training=False), c(v, training=False), atol=2e-6)


def test_make_norm_uses_it():
    assert isinstance(make_norm("frozen", 8, "n"), FusedInferenceBatchNorm)
    assert not make_norm("frozen", 8, "n").trainable
    assert isinstance(make_norm("group_norm", 8, "g"), keras.layers.GroupNormalization)


def test_fused_inference_under_mixed_bfloat16_equals_keras():
    """Under ``mixed_bfloat16`` (training precision, bfloat16 exports) the fused op takes
    the bfloat16 input with float32 statistics, as Keras' path computes it in float32; the
    two agree to bfloat16's rounding, and the frozen layer passes gradients to its input."""
    rng = np.random.default_rng(1)
    shape = (2, 8, 8, 16)
    a = keras.layers.BatchNormalization(epsilon=1e-5, dtype="mixed_bfloat16")
    b = FusedInferenceBatchNorm(epsilon=1e-5, dtype="mixed_bfloat16")
    for layer in (a, b):
        layer.build(shape)
    for va, vb in zip(a.weights, b.weights, strict=True):
        assert va.dtype == vb.dtype == "float32"
        value = rng.uniform(0.5, 2.0, va.shape).astype(np.float32)
        va.assign(value)
        vb.assign(value)
    x = tf.cast(rng.normal(size=shape).astype(np.float32) * 3, tf.bfloat16)
    ya, yb = a(x, training=False), b(x, training=False)
    assert ya.dtype == yb.dtype == tf.bfloat16
    graph = tf.function(lambda x: b(x, training=False)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}  # one op, no casts
    ref = (tf.cast(x, tf.float32) - a.moving_mean) * tf.math.rsqrt(a.moving_variance + 1e-5) \
        * a.gamma + a.beta
    for y in (ya, yb):  # bfloat16 keeps 8 significant bits: 2^-8 relative
        np.testing.assert_allclose(tf.cast(y, tf.float32), ref, rtol=2 ** -7, atol=2 ** -7)
    b.trainable = False

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(b(x, training=True), tf.float32))
        return tape.gradient(loss, x)

    scale = (b.gamma * tf.math.rsqrt(b.moving_variance + 1e-5)).numpy()  # d(sum y)/dx
    np.testing.assert_allclose(tf.cast(grad(x), tf.float32),
                               np.broadcast_to(scale, shape), rtol=2 ** -7)
