import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops import crop, masks


@pytest.mark.parametrize("size", [(7, 9), (1, 1), (1, 4), (28, 28)])
def test_gather_crop_equals_crop_and_resize_values_and_gradients(size):
    """Boxes partly and wholly outside the image (extrapolation), flipped boxes, one-sample
    crops (the box centre); the gradient reaching the image is the same too. Compiled with
    XLA, where CropAndResize has no kernel."""
    rng = np.random.default_rng(sum(size))
    image = tf.constant(rng.normal(size=(3, 17, 23, 5)).astype(np.float32))
    boxes = tf.constant(np.concatenate([rng.uniform(-0.3, 1.3, (40, 4)),
                                        [[0.2, 0.9, 0.1, 0.3], [1.2, 1.2, 1.5, 1.6]]]), tf.float32)
    index = tf.constant(rng.integers(0, 3, 42).astype(np.int32))
    weights = tf.constant(rng.normal(size=(42,) + size + (5,)).astype(np.float32))
    compiled = tf.function(crop.gather_crop_and_resize, jit_compile=True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        want = tf.image.crop_and_resize(image, boxes, index, size, extrapolation_value=0.5)
        got = compiled(image, boxes, index, size, 0.5)
        loss_want, loss_got = tf.reduce_sum(want * weights), tf.reduce_sum(got * weights)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)  # XLA fuses the blends
    assert (got.numpy() == 0.5).any()  # some samples extrapolated
    np.testing.assert_allclose(tape.gradient(loss_got, image).numpy(),
                               tape.gradient(loss_want, image).numpy(), atol=1e-4)


def test_mask_targets_xla_form_is_identical():
    rng = np.random.default_rng(0)
    gt_masks = tf.constant(rng.integers(0, 2, (2, 3, 32, 32)).astype(np.uint8))
    gt_boxes = tf.constant(rng.uniform(0, 60, (2, 3, 2)).repeat(2, -1) + [0, 0, 20, 30], tf.float32)
    rois = tf.constant(rng.uniform(0, 60, (2, 7, 2)).repeat(2, -1) + [0, 0, 25, 15], tf.float32)
    matched = tf.constant(rng.integers(0, 3, (2, 7)).astype(np.int32))
    want = masks.mask_targets(gt_masks, gt_boxes, rois, matched, 28)
    got = tf.function(lambda *a: masks.mask_targets(*a, 28, True), jit_compile=True)(
        gt_masks, gt_boxes, rois, matched)
    assert 0 < want.numpy().mean() < 1
    np.testing.assert_array_equal(got.numpy(), want.numpy())
