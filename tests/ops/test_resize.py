"""The NumPy letterbox of the TFLite runner equals the training/SavedModel preprocessing."""

import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops import resize


@pytest.mark.parametrize("shape,short,long,size", [
    ((480, 640), 128, 192, (256, 256)),   # downscale, short side decides
    ((100, 400), 128, 192, (256, 256)),   # long side decides
    ((37, 53), 256, 256, (256, 256)),     # upscale
    ((256, 170), 256, 256, (256, 256)),   # scale exactly 1: identity
    ((301, 97), 800, 1333, (1408, 1408)),
    ((600, 400), 800, 1333, (896, 1408)),  # portrait into landscape padding: scaled to fit
    ((1, 3000), 128, 192, (256, 256)),    # extreme aspect: the short side keeps 1 pixel
    ((3000, 1), 128, 192, (256, 256)),
    ((2, 5000), 800, 1333, (1408, 1408)),
])
def test_letterbox_equals_resize_and_pad(shape, short, long, size):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    padded, info = resize.resize_and_pad(tf.constant(image, tf.float32), short, long, size)
    ours, true_shape, scale = resize.letterbox(image, short, long, size)
    info = info.numpy()
    np.testing.assert_allclose(scale, info[2:4], rtol=1e-6)
    np.testing.assert_array_equal(true_shape, np.round(info[:2] * info[2:4]))
    h, w = (int(v) for v in true_shape)
    resized = resize.resize_bilinear(image, h, w)
    np.testing.assert_allclose(resized, padded.numpy()[:h, :w], atol=2e-3)
    # uint8 rounding is the only difference; the padding is zero in both.
    assert np.abs(ours.astype(np.float32) - padded.numpy()).max() <= 0.5 + 2e-3
    assert (ours[h:] == 0).all() and (ours[:, w:] == 0).all()


def test_letterbox_rejects_bad_shapes():
    with pytest.raises(ValueError, match="RGB image"):
        resize.letterbox(np.zeros((0, 5, 3), np.uint8), 128, 192, (256, 256))
    with pytest.raises(ValueError, match="RGB image"):
        resize.letterbox(np.zeros((5, 5), np.uint8), 128, 192, (256, 256))
