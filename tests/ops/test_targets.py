import numpy as np

from retinamask_tf.config import BoxCoderConfig, MatcherConfig
from retinamask_tf.ops import anchors as anchor_ops
from retinamask_tf.ops import box_coder, targets
from retinamask_tf.ops.matcher import IGNORED, NEGATIVE, POSITIVE


CODER, MATCHER = BoxCoderConfig(), MatcherConfig()


def _targets(anchors, gt, classes, valid, gt_crowd=None):
    """``anchor_targets`` with the default matcher and box coder settings."""
    return targets.anchor_targets(anchors, gt, classes, valid, gt_crowd,
                                  MATCHER.positive_threshold, MATCHER.negative_threshold,
                                  MATCHER.best_match_threshold, CODER.weights)


def _anchors():
    return anchor_ops.generate_anchors((128, 128), 3, 7, 3, (0.5, 1.0, 2.0), 4.0)[0]


def test_targets_decode_back_to_gt_and_padding_is_ignored():
    anchors = _anchors()
    gt = np.array([[[10, 20, 60, 50], [70, 5, 78, 100], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[2, 0, 7]], np.int32)
    valid = np.array([[True, True, False]])
    t = _targets(anchors, gt, classes, valid)
    labels = t["labels"].numpy()[0]
    pos = labels == POSITIVE
    assert pos.sum() >= 2
    decoded = box_coder.decode(t["box_targets"][0], anchors, CODER.weights, CODER.scale_clip).numpy()[pos]
    matched = t["matched_gt"].numpy()[0][pos]
    np.testing.assert_allclose(decoded, gt[0][matched], atol=1e-3)
    assert set(matched) == {0, 1}  # both real GT (incl. the 8x95 elongated one) are matched
    cls = t["cls_targets"].numpy()[0]
    np.testing.assert_array_equal(cls[pos], classes[0][matched])
    assert (cls[~pos] == -1).all()
    assert (t["box_targets"].numpy()[0][~pos] == 0).all()


def test_no_gt_gives_all_negative_and_finite_targets():
    anchors = _anchors()
    gt = np.zeros((2, 4, 4), np.float32)
    t = _targets(anchors, gt, np.zeros((2, 4), np.int32), np.zeros((2, 4), bool))
    assert (t["labels"].numpy() == NEGATIVE).all()
    assert np.isfinite(t["box_targets"].numpy()).all()


def test_crowd_region_ignores_covered_anchors():
    anchors = _anchors()
    gt = np.array([[[0, 0, 128, 128], [10, 10, 40, 40]]], np.float32)
    t_crowd = _targets(anchors, gt, np.array([[0, 1]], np.int32), np.array([[True, True]]),
                       gt_crowd=np.array([[True, False]]))
    labels = t_crowd["labels"].numpy()[0]
    assert (t_crowd["matched_gt"].numpy()[0][labels == POSITIVE] == 1).all()
    assert (labels == IGNORED).sum() > 0 and (labels == NEGATIVE).sum() > 0
    a = anchors.numpy()
    inside = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] <= 128) & (a[:, 3] <= 128)
    # Every anchor fully inside the crowd box is not a negative.
    assert (labels[inside] != NEGATIVE).all()
