"""The box losses by name (``loss.box_loss``): the one place a name is turned into a part.

Every box loss is a Keras layer called with ``(pred_deltas [B, N, 4], target_deltas
[B, N, 4], positive [B, N] bool, training)`` that returns the loss summed over positive
anchors and coordinates, and whose ``summaries()`` returns the scalars to log beside the
losses (e.g. the self-adjusting beta per coordinate).
"""

from retinamask_tf.losses.smooth_l1 import SelfAdjustingSmoothL1, SmoothL1Loss

BOX_LOSSES = {
    "self_adjusting": lambda c: SelfAdjustingSmoothL1(c.beta, c.beta_momentum, c.beta_min,
                                                      name="self_adjusting_smooth_l1"),
    "smooth_l1": lambda c: SmoothL1Loss(c.beta, name="smooth_l1"),
}


def build_box_loss(loss_config):
    """The box loss ``loss_config.box_loss`` names, built from the ``LossConfig``."""
    return BOX_LOSSES[loss_config.box_loss](loss_config)
