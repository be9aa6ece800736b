import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.losses.smooth_l1 import SelfAdjustingSmoothL1, smooth_l1


def test_smooth_l1_golden():
    x = np.array([0.0, 0.05, 0.11, 0.5], np.float32)
    got = smooth_l1(x, 0.11).numpy()
    np.testing.assert_allclose(got, [0.0, 0.5 * 0.0025 / 0.11, 0.11 - 0.055, 0.5 - 0.055], rtol=1e-6)


class _NumpySASL:
    """Independent reference of the released AdjustSmoothL1Loss update."""

    def __init__(self, beta_hat=0.11, momentum=0.9, beta_min=1e-3):
        self.mean = np.full(4, beta_hat)
        self.var = np.zeros(4)
        self.beta_hat, self.m, self.beta_min = beta_hat, momentum, beta_min

    def step(self, abs_diff, positive):
        x = abs_diff[positive]  # [P, 4]
        if len(x) >= 2:
            self.mean = self.m * self.mean + (1 - self.m) * x.mean(0)
            self.var = self.m * self.var + (1 - self.m) * x.var(0, ddof=1)
        beta = np.clip(self.mean - self.var, self.beta_min, self.beta_hat)
        loss = np.where(x < beta, 0.5 * x ** 2 / beta, x - 0.5 * beta)
        return loss.sum(), beta


def test_beta_update_over_two_steps_matches_numpy_reference():
    rng = np.random.default_rng(0)
    layer = SelfAdjustingSmoothL1(0.11, 0.9, 1e-3)
    ref = _NumpySASL()
    for scale in (0.08, 0.3):  # second step pushes mean - var above beta_hat -> clipped
        abs_diff = np.abs(rng.normal(0, scale, (2, 50, 4))).astype(np.float32)
        positive = rng.random((2, 50)) < 0.3
        loss = float(layer(abs_diff, np.zeros_like(abs_diff), positive, training=True))
        ref_loss, ref_beta = ref.step(abs_diff, positive)
        np.testing.assert_allclose(layer.running_mean.numpy(), ref.mean, rtol=1e-5)
        np.testing.assert_allclose(layer.running_var.numpy(), ref.var, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(layer.beta.numpy(), ref_beta, rtol=1e-5)
        assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_no_update_in_eval_or_with_fewer_than_two_positives():
    layer = SelfAdjustingSmoothL1()
    x = np.full((1, 3, 4), 0.05, np.float32)
    zero = np.zeros_like(x)
    layer(-x, zero, np.array([[True, True, False]]), training=False)  # |pred - target| = x
    np.testing.assert_allclose(layer.running_mean.numpy(), [0.11] * 4)
    layer(x, zero, np.array([[True, False, False]]), training=True)
    np.testing.assert_allclose(layer.running_mean.numpy(), [0.11] * 4)
    np.testing.assert_allclose(layer.running_var.numpy(), [0.0] * 4)
    assert float(layer(x, zero, np.zeros((1, 3), bool), training=True)) == 0.0


def test_state_is_saved_in_checkpoints(tmp_path):
    layer = SelfAdjustingSmoothL1()
    x = np.abs(np.random.default_rng(1).normal(0, 0.05, (1, 20, 4))).astype(np.float32)
    layer(x, np.zeros_like(x), np.ones((1, 20), bool), training=True)
    path = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
    fresh = SelfAdjustingSmoothL1()
    tf.train.Checkpoint(layer=fresh).restore(path).assert_consumed()
    np.testing.assert_allclose(fresh.running_mean.numpy(), layer.running_mean.numpy())
    np.testing.assert_allclose(fresh.running_var.numpy(), layer.running_var.numpy())
    assert not np.allclose(fresh.running_mean.numpy(), 0.11)


def test_box_losses_from_the_registry_take_predictions_and_targets():
    """Every registered box loss is called with (pred, target, positive) and reports its
    own summaries; the loss is a function of |pred - target| on positives only."""
    from retinamask_tf.config import LossConfig
    from retinamask_tf.config.schema import BoxLoss
    import typing
    from retinamask_tf.losses.registry import BOX_LOSSES, build_box_loss
    assert set(BOX_LOSSES) == set(typing.get_args(BoxLoss))
    rng = np.random.default_rng(2)
    pred = rng.normal(0, 0.2, (2, 30, 4)).astype(np.float32)
    target = rng.normal(0, 0.2, (2, 30, 4)).astype(np.float32)
    positive = rng.random((2, 30)) < 0.5
    for name in BOX_LOSSES:
        loss = build_box_loss(LossConfig(box_loss=name, beta=0.11))
        got = float(loss(pred, target, positive, training=False))
        x = np.abs(pred - target)[positive]
        want = np.where(x < 0.11, 0.5 * x ** 2 / 0.11, x - 0.055).sum()  # beta = beta_hat
        assert got == pytest.approx(want, rel=1e-5), name
        assert float(loss(target, target, positive)) == 0.0
        summaries = loss.summaries()
        assert [float(summaries[f"beta_{c}"]) for c in ("dy", "dx", "dh", "dw")] == \
            pytest.approx([0.11] * 4), name
