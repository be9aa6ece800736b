"""RoIAlign against an independent numpy port of the reference CPU kernel."""

import math

import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops import roi_align


def _bilinear(feat, y, x):
    """maskrcnn-benchmark / detectron2 ``bilinear_interpolate`` for one point."""
    h, w = feat.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feat.shape[2], np.float64)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feat[y_low, x_low] + hy * lx * feat[y_low, x_high]
            + ly * hx * feat[y_high, x_low] + ly * lx * feat[y_high, x_high])


def _roi_align_reference(feat, box, scale, out, ratio, aligned):
    """One box (yxyx image pixels) -> [out, out, C], the reference loop."""
    offset = 0.5 if aligned else 0.0
    y0, x0, y1, x1 = (v * scale - offset for v in box)
    roi_h, roi_w = y1 - y0, x1 - x0
    if not aligned:
        roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
    bin_h, bin_w = roi_h / out, roi_w / out
    result = np.zeros((out, out, feat.shape[2]), np.float64)
    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(feat.shape[2], np.float64)
            for iy in range(ratio):
                y = y0 + ph * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = x0 + pw * bin_w + (ix + 0.5) * bin_w / ratio
                    acc += _bilinear(feat, y, x)
            result[ph, pw] = acc / (ratio * ratio)
    return result


def _random_boxes(rng, n, image_h, image_w):
    boxes = []
    for _ in range(n):
        kind = rng.integers(4)
        if kind == 0:  # anywhere inside
            y0, x0 = rng.uniform(0, image_h - 2), rng.uniform(0, image_w - 2)
            y1, x1 = rng.uniform(y0 + 1, image_h), rng.uniform(x0 + 1, image_w)
        elif kind == 1:  # touching the borders
            y0, x0 = 0.0, rng.uniform(0, image_w / 2)
            y1, x1 = rng.uniform(image_h / 2, image_h), float(image_w)
        elif kind == 2:  # smaller than a bin (and than a feature pixel)
            y0, x0 = rng.uniform(0, image_h - 3), rng.uniform(0, image_w - 3)
            y1, x1 = y0 + rng.uniform(0.1, 2.0), x0 + rng.uniform(0.1, 2.0)
        else:  # partly outside the image
            y0, x0 = rng.uniform(-20, image_h / 2), rng.uniform(-20, image_w / 2)
            y1, x1 = y0 + rng.uniform(5, image_h), x0 + rng.uniform(5, image_w)
        boxes.append([y0, x0, y1, x1])
    return np.array(boxes, np.float32)


def _single_level(features, boxes, spatial_scale, output_size, sampling_ratio, aligned=False,
                  kernel="crop_and_resize"):
    """``multilevel_roi_align`` on one level (stride 1 / ``spatial_scale``): every box
    reads that level."""
    level = int(round(-math.log2(spatial_scale)))
    return roi_align.multilevel_roi_align(
        {f"P{level}": tf.convert_to_tensor(features)}, boxes, output_size, sampling_ratio,
        aligned, min_level=level, max_level=level, canonical_level=level, kernel=kernel)


@pytest.mark.parametrize("kernel", ["crop_and_resize", "matmul"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("scale,out,ratio", [(1 / 8, 7, 2), (1 / 4, 4, 2), (1 / 16, 3, 3)])
def test_matches_numpy_reference(aligned, scale, out, ratio, kernel):
    rng = np.random.default_rng(int(out * 10 + ratio + aligned))
    feat = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    image_h, image_w = 9 / scale, 11 / scale
    boxes = np.stack([_random_boxes(rng, 12, image_h, image_w) for _ in range(2)])
    got = _single_level(tf.constant(feat), tf.constant(boxes), scale, out, ratio,
                        aligned, kernel).numpy()
    assert got.shape == (2, 12, out, out, 3)
    for b in range(2):
        for r in range(12):
            want = _roi_align_reference(feat[b], boxes[b, r], scale, out, ratio, aligned)
            np.testing.assert_allclose(got[b, r], want, atol=1e-4, err_msg=f"box {boxes[b, r]}")


def test_aligned_differs_from_legacy_by_half_pixel():
    # On a linear ramp f(y, x) = x, RoIAlign of a box returns the mean x of its samples:
    # legacy reads x * scale, aligned reads x * scale - 0.5.
    feat = np.tile(np.arange(16, dtype=np.float32)[None, :, None], (16, 1, 1))[None]
    box = np.array([[[16.0, 16.0, 80.0, 80.0]]], np.float32)  # feature coords 2..10 at 1/8
    legacy = _single_level(feat, box, 1 / 8, 2, 2, aligned=False).numpy()
    aligned = _single_level(feat, box, 1 / 8, 2, 2, aligned=True).numpy()
    # Bins of 4 feature pixels; sample centres at 2 + 1, 2 + 3 -> bin 0 mean 4, bin 1 mean 8.
    np.testing.assert_allclose(legacy[0, 0, 0, :, 0], [4.0, 8.0], atol=1e-5)
    np.testing.assert_allclose(aligned[0, 0, 0, :, 0], [3.5, 7.5], atol=1e-5)


def test_assign_levels_golden():
    # sqrt(area) 224 -> 4; 112 -> 3; 448 -> 5; 1000 -> clamped 5; 10 -> clamped 3; 223 -> 3.
    sides = [224.0, 112.0, 448.0, 1000.0, 10.0, 223.0, 447.0]
    boxes = tf.constant([[0.0, 0.0, s, s] for s in sides])
    np.testing.assert_array_equal(roi_align.assign_levels(boxes).numpy(), [4, 3, 5, 5, 3, 3, 4])
    # Elongated: 56 x 896 has sqrt(area) 224 -> level 4.
    assert int(roi_align.assign_levels(tf.constant([[0.0, 0.0, 56.0, 896.0]]))[0]) == 4


@pytest.mark.parametrize("aligned,kernel", [(False, "crop_and_resize"), (True, "crop_and_resize"),
                                            (False, "gather"), (False, "matmul"),
                                            (True, "matmul")])
def test_multilevel_reads_each_box_from_its_level(aligned, kernel):
    """Each kernel of the stacked implementation equals the reference on each box's level,
    including boxes outside the image (samples zeroed as the reference does); ``gather``
    compiled with jit_compile."""
    rng = np.random.default_rng(3)
    h, w = 384, 512  # non-square: levels differ in both sides
    feats = {f"P{l}": tf.constant(rng.normal(size=(2, h // 2 ** l, w // 2 ** l, 3)),
                                  tf.float32) for l in (3, 4, 5)}
    fixed = np.array([[10, 10, 40, 50], [0, 0, 230, 220], [-100, -50, 420, 520],
                      [-60, 450, 30, 560], [300, -40, 420, 100]], np.float32)
    boxes = np.stack([np.concatenate([fixed, _random_boxes(rng, 15, h, w)]) for _ in range(2)])
    fn = tf.function(lambda f, b: roi_align.multilevel_roi_align(f, b, 5, 2, aligned,
                                                                  kernel=kernel),
                     jit_compile=kernel == "gather")
    got = fn(feats, tf.constant(boxes)).numpy()
    levels = roi_align.assign_levels(tf.constant(boxes)).numpy()
    assert list(levels[0, :3]) == [3, 4, 5] and set(levels.ravel()) == {3, 4, 5}
    for b in range(2):
        for r, level in enumerate(levels[b]):
            want = _roi_align_reference(feats[f"P{level}"].numpy()[b], boxes[b, r],
                                        1 / 2 ** level, 5, 2, aligned)
            np.testing.assert_allclose(got[b, r], want, atol=1e-4, err_msg=f"{boxes[b, r]}")


@pytest.mark.parametrize("kernel", ["crop_and_resize", "matmul"])
def test_gradient_flows_to_features(kernel):
    feat = tf.Variable(tf.ones((1, 8, 8, 2)))
    with tf.GradientTape() as tape:
        out = _single_level(feat, tf.constant([[[8.0, 8.0, 40.0, 40.0]]]), 1 / 8, 4, 2,
                            kernel=kernel)
        loss = tf.reduce_sum(out)
    grad = tape.gradient(loss, feat).numpy()
    # Every output bin averages weights that sum to 1: total gradient = number of outputs.
    np.testing.assert_allclose(grad.sum(), 4 * 4 * 2, rtol=1e-5)
