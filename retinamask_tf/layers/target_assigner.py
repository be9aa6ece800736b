"""The target assigner part of the detector: anchors + ground truth -> training targets."""

import keras

from retinamask_tf.ops import targets


@keras.saving.register_keras_serializable(package="retinamask_tf")
class TargetAssigner:
    """Matches anchors to ground-truth boxes (``ops.matcher``: IoU thresholds plus
    RetinaMask's best matching) and encodes the box targets (``ops.box_coder``).

    Args:
      positive_threshold, negative_threshold: IoU at or above which an anchor is positive,
        below which it is negative (between: ignored).
      best_match_threshold: every ground-truth box also gets its best anchor(s) as
        positives when their IoU exceeds this; None: off (plain RetinaNet).
      coder_weights: (dy, dx, dh, dw) box coder weights.
      use_crowd: anchors inside crowd regions are ignored (``data.crowd: ignore``).
    """

    def __init__(self, positive_threshold, negative_threshold, best_match_threshold,
                 coder_weights, use_crowd=False):
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.best_match_threshold = (None if best_match_threshold is None
                                     else float(best_match_threshold))
        self.coder_weights = tuple(float(w) for w in coder_weights)
        self.use_crowd = bool(use_crowd)

    def __call__(self, anchors, labels):
        """Targets of a batch.

        Args:
          anchors: [N, 4] yxyx model-input pixels.
          labels: dict gt_boxes [B, G, 4] yxyx (model-input pixels), gt_classes [B, G],
            gt_valid [B, G] bool, gt_crowd [B, G] bool.
        Returns:
          ``ops.targets.anchor_targets``' dict: labels [B, N] (matcher.POSITIVE /
          NEGATIVE / IGNORE), cls_targets [B, N], box_targets [B, N, 4], ...
        """
        return targets.anchor_targets(
            anchors, labels["gt_boxes"], labels["gt_classes"], labels["gt_valid"],
            labels.get("gt_crowd") if self.use_crowd else None,
            coder_weights=self.coder_weights, positive_threshold=self.positive_threshold,
            negative_threshold=self.negative_threshold,
            best_match_threshold=self.best_match_threshold)

    def get_config(self):
        return {"positive_threshold": self.positive_threshold,
                "negative_threshold": self.negative_threshold,
                "best_match_threshold": self.best_match_threshold,
                "coder_weights": list(self.coder_weights), "use_crowd": self.use_crowd}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
