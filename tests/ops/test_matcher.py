import numpy as np

from retinamask_tf.ops import matcher
from retinamask_tf.ops.matcher import IGNORED, NEGATIVE, POSITIVE

# Rows: anchors; columns: GT boxes.
IOU = np.array([
    [0.70, 0.10, 0.00],  # >= 0.5 -> positive, GT 0
    [0.45, 0.20, 0.05],  # ignored band
    [0.30, 0.35, 0.10],  # < 0.4 -> negative (unless best match)
    [0.10, 0.05, 0.25],  # negative, but the best anchor of GT 2
], np.float32)


def test_thresholds_without_best_match():
    matched, labels = matcher.match(IOU, 0.5, 0.4, best_match_threshold=None)
    np.testing.assert_array_equal(labels.numpy(), [POSITIVE, IGNORED, NEGATIVE, NEGATIVE])
    np.testing.assert_array_equal(matched.numpy()[:1], [0])


def test_best_match_makes_every_gt_positive_somewhere():
    matched, labels = matcher.match(IOU, 0.5, 0.4, best_match_threshold=0.0)
    # GT 1's best anchor is row 2 (0.35), GT 2's best is row 3 (0.25).
    np.testing.assert_array_equal(labels.numpy(), [POSITIVE, IGNORED, POSITIVE, POSITIVE])
    # Row 2 keeps the GT it overlaps most: GT 1 (0.35 > 0.30).
    np.testing.assert_array_equal(matched.numpy(), [0, 0, 1, 2])


def test_best_match_threshold_filters_weak_best_matches():
    _, labels = matcher.match(IOU, 0.5, 0.4, best_match_threshold=0.3)
    # GT 1 best 0.35 > 0.3 -> row 2 positive; GT 2 best 0.25 <= 0.3 -> row 3 stays negative.
    np.testing.assert_array_equal(labels.numpy(), [POSITIVE, IGNORED, POSITIVE, NEGATIVE])


def test_ties_at_the_maximum_all_become_positive():
    iou = np.array([[0.3, 0.0], [0.3, 0.0], [0.1, 0.2]], np.float32)
    matched, labels = matcher.match(iou, 0.5, 0.4, 0.0)
    np.testing.assert_array_equal(labels.numpy(), [POSITIVE, POSITIVE, POSITIVE])
    np.testing.assert_array_equal(matched.numpy(), [0, 0, 1])


def test_padded_gt_never_matches_and_no_gt_is_all_negative():
    iou = np.array([[[0.9, -1.0], [0.0, -1.0]]], np.float32)  # column 1 is padding
    matched, labels = matcher.match(iou, 0.5, 0.4, 0.0)
    np.testing.assert_array_equal(labels.numpy(), [[POSITIVE, NEGATIVE]])
    np.testing.assert_array_equal(matched.numpy(), [[0, 0]])
    all_pad = -np.ones((1, 3, 2), np.float32)
    _, labels = matcher.match(all_pad, 0.5, 0.4, 0.0)
    np.testing.assert_array_equal(labels.numpy(), [[NEGATIVE] * 3])
    _, labels = matcher.match(np.zeros((3, 0), np.float32), 0.5, 0.4, 0.0)
    np.testing.assert_array_equal(labels.numpy(), [NEGATIVE] * 3)
