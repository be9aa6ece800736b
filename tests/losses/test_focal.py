import math

import numpy as np
import pytest

from retinamask_tf.losses import focal


def _by_hand(logit, target, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target else 1 - p
    alpha_t = alpha if target else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_golden_values():
    logits = np.array([0.0, 2.0, -3.0, 4.0], np.float32)
    targets = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    got = focal.sigmoid_focal_loss(logits, targets).numpy()
    # logit 0, target 1: 0.25 * 0.5^2 * log 2
    assert got[0] == pytest.approx(0.25 * 0.25 * math.log(2.0), rel=1e-6)
    assert got[0] == pytest.approx(0.0433217, rel=1e-5)
    for g, l, t in zip(got, logits, targets):
        assert g == pytest.approx(_by_hand(float(l), t), rel=1e-5)


def test_gamma_zero_alpha_half_is_half_bce():
    logits = np.linspace(-5, 5, 11).astype(np.float32)
    targets = (np.arange(11) % 2).astype(np.float32)
    got = focal.sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.0).numpy()
    bce = np.log1p(np.exp(-np.where(targets > 0, logits, -logits)))
    np.testing.assert_allclose(got, 0.5 * bce, rtol=1e-5)


def test_large_logits_are_finite():
    got = focal.sigmoid_focal_loss(np.array([100.0, -100.0]), np.array([0.0, 1.0])).numpy()
    assert np.isfinite(got).all() and got[0] > 50


def test_classification_loss_skips_ignored_anchors():
    logits = np.zeros((1, 3, 2), np.float32)
    cls_targets = np.array([[1, -1, -1]], np.int32)
    labels = np.array([[1, 0, -1]], np.int32)  # positive, negative, ignored
    got = float(focal.classification_loss(logits, cls_targets, labels))
    pos = _by_hand(0.0, 1) + _by_hand(0.0, 0)  # anchor 0: class 1 positive, class 0 negative
    neg = 2 * _by_hand(0.0, 0)
    assert got == pytest.approx(pos + neg, rel=1e-6)
