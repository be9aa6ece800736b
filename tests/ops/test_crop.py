import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops import crop, masks


def _numpy_image_gradient(shape, boxes, index, size, weights):
    """d sum(weights * crops) / d image of bilinear crop_and_resize, in plain numpy loops
    (sample positions in float32 with the kernel's formula)."""
    _, height, width, _ = shape
    grad = np.zeros(shape, np.float64)

    def positions(lo, hi, extent, n):
        extent = np.float32(extent - 1)
        if n == 1:
            return [np.float32(0.5) * (lo + hi) * extent]
        step = (hi - lo) * extent / np.float32(n - 1)
        return [lo * extent + np.float32(i) * step for i in range(n)]

    for r, (y1, x1, y2, x2) in enumerate(boxes.astype(np.float32)):
        n = index[r]
        for i, y in enumerate(positions(y1, y2, height, size[0])):
            if not 0 <= y <= height - 1:
                continue
            top, bottom, ly = int(np.floor(y)), int(np.ceil(y)), float(y - np.floor(y))
            for j, x in enumerate(positions(x1, x2, width, size[1])):
                if not 0 <= x <= width - 1:
                    continue
                left, right, lx = int(np.floor(x)), int(np.ceil(x)), float(x - np.floor(x))
                w = weights[r, i, j].astype(np.float64)
                grad[n, top, left] += w * (1 - ly) * (1 - lx)
                grad[n, top, right] += w * (1 - ly) * lx
                grad[n, bottom, left] += w * ly * (1 - lx)
                grad[n, bottom, right] += w * ly * lx
    return grad


@pytest.mark.parametrize("size", [(7, 9), (1, 1), (1, 4), (28, 28)])
def test_gather_crop_equals_crop_and_resize_values_and_gradients(size):
    """Boxes partly and wholly outside the image (extrapolation), flipped boxes, one-sample
    crops (the box centre). Values equal crop_and_resize's; the gradient reaching the image
    equals a numpy reference and is the same on every call. (TF's own CPU gradient of
    crop_and_resize is not a usable reference: it sometimes differs from call to call.)
    Compiled with XLA, where CropAndResize has no kernel."""
    rng = np.random.default_rng(sum(size))
    image = tf.constant(rng.normal(size=(3, 17, 23, 5)).astype(np.float32))
    boxes = np.concatenate([rng.uniform(-0.3, 1.3, (40, 4)),
                            [[0.2, 0.9, 0.1, 0.3], [1.2, 1.2, 1.5, 1.6]]]).astype(np.float32)
    index = rng.integers(0, 3, 42).astype(np.int32)
    weights = rng.normal(size=(42,) + size + (5,)).astype(np.float32)
    compiled = tf.function(crop.gather_crop_and_resize, jit_compile=True)
    want = tf.image.crop_and_resize(image, boxes, index, size, extrapolation_value=0.5)
    got = compiled(image, tf.constant(boxes), tf.constant(index), size, 0.5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)  # XLA fuses the blends
    assert (got.numpy() == 0.5).any()  # some samples extrapolated

    def gradient():
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_sum(compiled(image, tf.constant(boxes), tf.constant(index), size,
                                          0.5) * weights)
        return tape.gradient(loss, image).numpy()

    first = gradient()
    np.testing.assert_allclose(first, _numpy_image_gradient(image.shape, boxes, index, size,
                                                            weights), atol=1e-3)
    for _ in range(5):
        np.testing.assert_array_equal(gradient(), first)


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


def _exact_grad_case(height, width, channels, num):
    rng = np.random.default_rng(7)
    image = tf.constant(rng.normal(size=(2, height, width, channels)).astype(np.float32))
    y1, x1 = rng.uniform(-0.05, 0.7, (2, 2, num))
    boxes = np.stack([y1, x1, y1 + rng.uniform(0.02, 0.4, (2, num)),
                      x1 + rng.uniform(0.02, 0.4, (2, num))], -1).astype(np.float32)
    weights = rng.normal(size=(2 * num, 28, 28, channels)).astype(np.float32)
    return image, boxes, weights


# The demo's stacked maps (the backward pass writes each box into its own slot), and a map
# over 10 x 28 x 28 pixels (it scatters each sample into its four neighbours).
@pytest.mark.parametrize("height,width,channels,num", [(62, 34, 64, 100), (100, 90, 8, 30)])
def test_exact_grad_crop_repeats_and_equals_the_reference(height, width, channels, num):
    """2 images x ``num`` boxes of 28x28: values equal crop_and_resize's, and the image
    gradient equals the numpy reference on every call. (TF's CPU CropAndResizeGradImage can
    race at sizes like these, depending on how its threads happen to be scheduled, so it
    is not the reference; the README has measured cases.)"""
    image, boxes, weights = _exact_grad_case(height, width, channels, num)
    index = np.repeat(np.arange(2), num).astype(np.int32)
    want = tf.image.crop_and_resize(image, boxes.reshape(-1, 4), index, (28, 28))
    got = crop.crop_and_resize_exact_grad(image, tf.constant(boxes), (28, 28))
    np.testing.assert_array_equal(got.numpy(), want.numpy())

    @tf.function
    def gradient(img):
        with tf.GradientTape() as tape:
            tape.watch(img)
            loss = tf.reduce_sum(crop.crop_and_resize_exact_grad(img, boxes, (28, 28)) * weights)
        return tape.gradient(loss, img)

    first = gradient(image).numpy()
    reference = _numpy_image_gradient(image.shape, boxes.reshape(-1, 4), index, (28, 28), weights)
    np.testing.assert_allclose(first, reference, atol=1e-3)
    for _ in range(10):
        np.testing.assert_array_equal(gradient(image).numpy(), first)
