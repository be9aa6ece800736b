"""DepthToSpaceDeconv: a Conv2DTranspose with kernel = stride, computed without TRANSPOSE_CONV."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.layers.depth_to_space_deconv import DepthToSpaceDeconv


def _op_types(layer, x):
    fn = tf.function(lambda t: layer(t))
    graph = fn.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("k,shape", [(2, (3, 5, 7, 6)), (3, (2, 4, 3, 5))])
def test_equals_conv2d_transpose(k, shape):
    """Same variables, same results as Keras' Conv2DTranspose (measured: equal to the last
    bit at float32), without a transposed convolution in the graph."""
    x = np.random.default_rng(k).normal(size=shape).astype(np.float32)
    ref = keras.layers.Conv2DTranspose(4, k, strides=k, bias_initializer="random_normal")
    ours = DepthToSpaceDeconv(4, k)
    ref(x), ours(x)
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in ref.get_weights()]
    ours.set_weights(ref.get_weights())
    got = np.asarray(ours(x))
    assert got.shape == (shape[0], k * shape[1], k * shape[2], 4)
    np.testing.assert_allclose(got, np.asarray(ref(x)), atol=1e-5)
    ops = _op_types(ours, tf.constant(x))
    assert "DepthToSpace" in ops and not any("Transpose" in o and "Conv" in o for o in ops)


def test_mixed_precision_and_config_round_trip():
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype(np.float32)
    ref = keras.layers.Conv2DTranspose(6, 2, strides=2, bias_initializer="random_normal")
    ref(x)
    half = DepthToSpaceDeconv(6, 2, dtype="mixed_float16")
    half(x)
    half.set_weights(ref.get_weights())
    got = half(x)
    assert got.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref(x)), atol=2e-2)
    again = DepthToSpaceDeconv.from_config(half.get_config())
    assert again.strides == (2, 2) and again.kernel_size == (2, 2)


@pytest.mark.parametrize("kwargs", [{"strides": 1}, {"padding": "same"},
                                    {"kernel_size": (2, 3)}, {"data_format": "channels_first"}])
def test_refuses_what_it_does_not_compute(kwargs):
    kwargs = {"kernel_size": 2, **kwargs}
    with pytest.raises(ValueError, match="DepthToSpaceDeconv needs a square kernel equal to"):
        DepthToSpaceDeconv(4, **kwargs)
