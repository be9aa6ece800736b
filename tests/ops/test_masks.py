"""Mask targets and pasting: golden cases and a round trip."""

import numpy as np
import tensorflow as tf

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
    pasted = masks.paste_masks(probs, box, 10, 12).numpy()[0]
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
    pasted = masks.paste_masks(target, box[None], 64, 80).numpy()[0]
    iou = (pasted & full.astype(bool)).sum() / (pasted | full.astype(bool)).sum()
    assert iou > 0.95, iou
