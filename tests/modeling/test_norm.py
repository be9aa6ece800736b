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
    # Frozen (the "frozen" norm): inference statistics even when training, the same output
    # and the same gradient for the input as Keras'; gamma and beta are not trained and get
    # no gradient.
    a.trainable = b.trainable = False
    xt = tf.constant(x)
    outputs, grads = [], []
    for layer in (a, b):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * y)
        outputs.append(y)
        grads.append(tape.gradient(loss, [xt, layer.gamma, layer.beta]))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=2e-6)
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-4)
    assert grads[1][1] is None and grads[1][2] is None
    # A 2-D input (not the fused op's layout) falls back to Keras' path.
    c, d, v = _pair((5, 16))
    np.testing.assert_allclose(d(v, training=False), c(v, training=False), atol=2e-6)


def test_frozen_training_step_does_not_keep_the_convolution_output():
    """In a training step, the frozen layer's gradient needs its scale, not its input: the
    backward pass reads the convolution's input and the ReLU's output, never the
    convolution's output (FusedBatchNormV3's own gradient read it, so every backbone
    convolution's output stayed in memory until the backward pass)."""
    conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
    norm = make_norm("frozen", 8, "n")

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            y = tf.nn.relu(norm(conv(x), training=True))
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, conv.kernel)

    graph = step.get_concrete_function(tf.TensorSpec((1, 8, 8, 4))).graph
    ops = graph.get_operations()
    types = {op.type for op in ops}
    assert "FusedBatchNormGradV3" not in types and "Conv2DBackpropFilter" in types
    conv_out = next(op for op in ops if op.type == "Conv2D").outputs[0]
    readers = [op.type for op in conv_out.consumers()]
    assert all(t in ("FusedBatchNormV3", "IdentityN") for t in readers), readers
    # ... and the gradient is right: d(sum relu(bn(conv))^2)/d kernel against float64 numpy.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    for v in norm.weights:
        v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
    kernel = conv.kernel.numpy().astype(np.float64)

    def loss(k):
        pad = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
        c = sum(pad[:, i:i + 8, j:j + 8, :] @ k[i, j] for i in range(3) for j in range(3))
        g, b, m, var = (w.numpy().astype(np.float64) for w in norm.weights)
        return np.sum(np.maximum((c - m) / np.sqrt(var + 1e-5) * g + b, 0) ** 2)

    numeric = np.zeros_like(kernel)
    for idx in np.ndindex(kernel.shape):
        d = np.zeros_like(kernel)
        d[idx] = 1e-6
        numeric[idx] = (loss(kernel + d) - loss(kernel - d)) / 2e-6
    np.testing.assert_allclose(step(x), numeric, rtol=1e-3, atol=1e-3)


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
