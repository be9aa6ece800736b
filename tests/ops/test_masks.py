"""Mask targets and pasting (``mask_paste``): golden cases, a round trip, and the paste
against an independent reference (TF's crop_and_resize of the zero-padded grid)."""

import numpy as np
import tensorflow as tf

from retinamask_tf import mask_paste
from retinamask_tf.ops import masks


def test_target_of_the_gt_box_itself_is_the_resampled_mask():
    # A 4x4 box-frame mask with its left half on; RoI == GT box; output 8x8.
    grid = np.zeros((1, 1, 4, 4), np.uint8)
    grid[..., :, :2] = 1
    box = np.array([[[10.0, 20.0, 50.0, 60.0]]], np.float32)
    target = masks.mask_targets(grid, box, box, tf.zeros((1, 1), tf.int32), 8).numpy()[0, 0]
    want = np.zeros((8, 8))
    want[:, :4] = 1
    np.testing.assert_array_equal(target, want)


def test_target_of_a_larger_roi_holds_the_mask_in_its_quadrant():
    # GT box is the top-left quarter of the RoI; a full GT mask fills that quarter.
    grid = np.ones((1, 2, 8, 8), np.uint8)
    grid[0, 1] = 0  # second GT has an empty mask and must not leak in
    gt = np.array([[[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 40.0, 40.0]]], np.float32)
    roi = np.array([[[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 40.0, 40.0]]], np.float32)
    matched = tf.constant([[0, 1]], tf.int32)
    target = masks.mask_targets(grid, gt, roi, matched, 10).numpy()[0]
    want = np.zeros((10, 10))
    want[:5, :5] = 1
    np.testing.assert_array_equal(target[0], want)
    np.testing.assert_array_equal(target[1], np.zeros((10, 10)))


def test_paste_fills_exactly_the_pixels_whose_centres_are_in_the_box():
    probs = np.ones((1, 28, 28), np.float32)
    box = np.array([[2.0, 3.0, 6.0, 9.0]], np.float32)
    pasted = mask_paste.paste_masks(probs, box, 10, 12)[0]
    want = np.zeros((10, 12), bool)
    want[2:6, 3:9] = True
    np.testing.assert_array_equal(pasted, want)


def test_box_frame_round_trip_keeps_the_shape():
    # An ellipse in a 64x80 image -> box frame (S=56) -> 28x28 target -> pasted back.
    yy, xx = np.mgrid[0:64, 0:80] + 0.5
    full = (((yy - 30) / 20) ** 2 + ((xx - 40) / 30) ** 2 <= 1).astype(np.uint8)
    ys, xs = np.nonzero(full)
    box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)
    s = 56
    centres = (np.arange(s) + 0.5) / s
    rows = np.floor(box[0] + centres * (box[2] - box[0])).astype(int)
    cols = np.floor(box[1] + centres * (box[3] - box[1])).astype(int)
    grid = full[np.ix_(rows, cols)][None, None]
    target = masks.mask_targets(grid, box[None, None], box[None, None], tf.zeros((1, 1), tf.int32),
                                28).numpy()[0]
    pasted = mask_paste.paste_masks(target, box[None], 64, 80)[0]
    iou = (pasted & full.astype(bool)).sum() / (pasted | full.astype(bool)).sum()
    assert iou > 0.95, iou


def _reference_paste(probs, boxes, height, width, threshold):
    """Each image pixel centre mapped into the zero-padded grid and read by
    tf.image.crop_and_resize (bilinear), one box at a time."""
    m = probs.shape[-1]
    padded = np.pad(probs, [(0, 0), (1, 1), (1, 1)])[..., None]
    out = []
    for i, (y0, x0, y1, x1) in enumerate(boxes.astype(np.float64)):
        def norm(p, start, size):  # padded-grid coordinate / (m + 1)
            return ((p - start) / max(size, 1e-6) * m + 0.5) / (m + 1)
        crop = [norm(0.5, y0, y1 - y0), norm(0.5, x0, x1 - x0),
                norm(height - 0.5, y0, y1 - y0), norm(width - 0.5, x0, x1 - x0)]
        full = tf.image.crop_and_resize(padded[i:i + 1], [crop], [0], [height, width])
        out.append(full.numpy()[0, ..., 0] >= threshold)
    return np.stack(out)


def test_paste_matches_crop_and_resize_of_the_padded_grid():
    rng = np.random.default_rng(0)
    differing = total = 0
    for _ in range(12):
        height, width = (int(v) for v in rng.integers(20, 160, 2))
        probs = rng.random((4, 28, 28)).astype(np.float32)
        y0, x0 = rng.uniform(-20, height, 4), rng.uniform(-20, width, 4)
        size = rng.uniform(0.3, 120, (2, 4))
        boxes = np.stack([y0, x0, y0 + size[0], x0 + size[1]], 1).astype(np.float32)
        got = mask_paste.paste_masks(probs, boxes, height, width, 0.5)
        want = _reference_paste(probs, boxes, height, width, 0.5)
        differing += int((got != want).sum())
        total += got.size
    # Pixels within float rounding of the threshold may fall either way (none did: 0 of
    # 1.8M in a 50-image trial); more than one in 10^4 is a real difference.
    assert differing <= total * 1e-4, (differing, total)


def test_paste_of_none_and_of_no_masks():
    assert mask_paste.paste_masks(None, np.zeros((0, 4)), 5, 6) is None
    assert mask_paste.paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), 5, 6).shape == (0, 5, 6)
