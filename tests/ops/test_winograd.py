"""Winograd F(4x4, 3x3) against an independent numpy convolution."""

import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops.winograd import winograd_conv3x3, winograd_kernel, winograd_pays


def _numpy_conv3x3(x, k):
    """Direct "same" 3x3 stride-1 convolution (cross-correlation, as TF's), float64."""
    n, h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = np.zeros((n, h, w, k.shape[3]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + w],
                             k[dy, dx].astype(np.float64))
    return out


@pytest.mark.parametrize("shape", [(2, 13, 7, 5, 3), (1, 4, 4, 2, 1), (1, 1, 1, 3, 2),
                                   (3, 9, 10, 4, 6), (1, 24, 17, 32, 8)])
def test_matches_direct_convolution(shape):
    """Every spatial size class (whole tiles, partial tiles, smaller than a tile) and
    batch > 1: float64 equals the numpy convolution to rounding (so the transforms are
    exact), float32 to ~1e-5 of the output's scale."""
    n, h, w, cin, cout = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, h, w, cin))
    k = rng.standard_normal((3, 3, cin, cout))
    ref = _numpy_conv3x3(x, k)
    y64 = winograd_conv3x3(tf.constant(x), tf.constant(k)).numpy()
    assert y64.shape == ref.shape
    np.testing.assert_allclose(y64, ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    y32 = winograd_conv3x3(tf.constant(x, tf.float32), tf.constant(k, tf.float32)).numpy()
    assert np.abs(y32 - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("max_band_bytes", [1, 36 * 2 * 5 * 8 * 2 * 3])
def test_bands_of_tile_rows_give_the_same_result(max_band_bytes):
    """A large input is computed in bands of tile rows (1 row per band, then 3 of the 4
    rows in the first band and 1 in the second); the result is the unbanded one."""
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal((2, 13, 7, 5)))
    k = tf.constant(rng.standard_normal((3, 3, 5, 3)))
    np.testing.assert_allclose(winograd_conv3x3(x, k, max_band_bytes).numpy(),
                               winograd_conv3x3(x, k).numpy(), rtol=0, atol=1e-12)


def test_kernel_transform_is_g_k_gt():
    """U[a*6+b, c, o] = (G k[:, :, c, o] G^T)[a, b] with Lavin & Gray's G (written out
    here independently of the module)."""
    g = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    k = np.random.default_rng(0).standard_normal((3, 3, 2, 3))
    u = winograd_kernel(tf.constant(k)).numpy()
    assert u.shape == (36, 2, 3)
    for c in range(2):
        for o in range(3):
            np.testing.assert_allclose(u[:, c, o].reshape(6, 6), g @ k[:, :, c, o] @ g.T,
                                       atol=1e-14)


@pytest.mark.parametrize("max_band_bytes", [2 ** 25, 1, 36 * 2 * 2 * 5 * 8 * 2])
def test_gradients_match_direct_convolution(max_band_bytes):
    """Gradients w.r.t. input and kernel equal those of ``tf.nn.conv2d`` (float64; in a
    tf.function like training), in one band, in bands of one tile row (each pair of
    bands sharing two padded rows, whose gradients add), and in bands of 2 + 1 rows."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 10, 7, 4)))
    k = tf.constant(rng.standard_normal((3, 3, 4, 5)))
    r = tf.constant(rng.standard_normal((2, 10, 7, 5)))

    @tf.function
    def grads(winograd):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            if winograd:
                y = winograd_conv3x3(x, k, max_band_bytes)
            else:
                y = tf.nn.conv2d(x, k, 1, "SAME")
            loss = tf.reduce_sum(y * r)
        return tape.gradient(loss, [x, k])

    for got, want in zip(grads(True), grads(False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-9)


def test_needs_static_spatial_size_and_a_3x3_kernel():
    fn = tf.function(lambda x: winograd_conv3x3(x, tf.zeros([3, 3, 2, 2])),
                     input_signature=[tf.TensorSpec([1, None, None, 2])])
    with pytest.raises(ValueError, match="static spatial sizes"):
        fn.get_concrete_function()
    with pytest.raises(ValueError, match=r"\[3, 3, Cin, Cout\]"):
        winograd_conv3x3(tf.zeros([1, 4, 4, 2]), tf.zeros([5, 5, 2, 2]))


@pytest.mark.parametrize("h,w,cin,cout,pays", [
    (64, 64, 256, 256, True), (32, 32, 256, 256, True), (100, 168, 256, 720, True),
    (16, 16, 256, 256, False), (16, 16, 256, 720, False), (16, 16, 512, 512, False),
    (128, 128, 64, 64, False), (64, 64, 128, 128, True), (64, 64, 256, 36, False),
    (None, 64, 256, 256, False)])
def test_auto_rule(h, w, cin, cout, pays):
    """The ``auto`` rule: >= 128 channels each way and >= 2^18 outputs per image."""
    assert winograd_pays(h, w, cin, cout) is pays
