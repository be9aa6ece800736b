"""The anchor generator part of the detector: anchors of a static input size."""

import keras
import numpy as np

from retinamask_tf.ops import anchors as anchor_ops


@keras.saving.register_keras_serializable(package="retinamask_tf")
class AnchorGenerator:
    """Anchors of levels ``min_level..max_level``: per location ``num_scales`` sizes
    ``anchor_scale * 2^level * 2^(i / num_scales)`` times each aspect ratio
    (``ops.anchors.generate_anchors``); ``style`` exact, released or torchvision."""

    def __init__(self, min_level=3, max_level=7, num_scales=3, aspect_ratios=(0.5, 1.0, 2.0),
                 anchor_scale=4.0, style="exact"):
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.num_scales = int(num_scales)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.anchor_scale = float(anchor_scale)
        if style not in anchor_ops.STYLES:
            raise ValueError(f"anchor style must be one of {anchor_ops.STYLES}, got {style!r}")
        self.style = style

    @property
    def num_anchors(self):
        """Anchors per feature-map location."""
        return self.num_scales * len(self.aspect_ratios)

    def __call__(self, image_size):
        """(anchors [N, 4] float32 NumPy, yxyx model-input pixels, level by level;
        level_counts: anchors per level) for a static (height, width)."""
        boxes, counts = anchor_ops.generate_anchors(
            tuple(int(s) for s in image_size), self.min_level, self.max_level, self.num_scales,
            self.aspect_ratios, self.anchor_scale, self.style)
        return np.asarray(boxes, np.float32), counts

    def get_config(self):
        return {"min_level": self.min_level, "max_level": self.max_level,
                "num_scales": self.num_scales, "aspect_ratios": list(self.aspect_ratios),
                "anchor_scale": self.anchor_scale, "style": self.style}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
