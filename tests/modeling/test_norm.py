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
