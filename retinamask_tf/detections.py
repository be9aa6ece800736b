"""The one result type of every predictor (``retinamask_tf.load``), and the one input check.

NumPy only (no TensorFlow): the LiteRT runner, which deployments run without TensorFlow,
returns it too.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Detections:
    """Detections of one image, in the frame and pixels of the image given.

    Attributes:
      boxes: float32 [n, 4], (ymin, xmin, ymax, xmax) in pixels of the input image.
      scores: float32 [n], decreasing.
      classes: int64 [n], the dataset's category ids (those of its COCO JSON).
      names: n class names (a tuple of str).
      masks: bool [k, H, W] full-image masks of the first k detections (k = the model's
        ``model.mask_head.num_masks`` or n if fewer), or None when the model has no mask
        branch (a detection-only export).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: Tuple[str, ...]
    masks: Optional[np.ndarray] = None

    def __post_init__(self):
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or len(self.classes) != n or len(self.names) != n:
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, scores "
                             f"{self.scores.shape}, classes {self.classes.shape}, "
                             f"{len(self.names)} names")
        if self.masks is not None and (self.masks.ndim != 3 or len(self.masks) > n):
            raise ValueError(f"masks must be [k <= {n}, H, W], got {self.masks.shape}")

    def __len__(self):
        return len(self.scores)

    @classmethod
    def build(cls, boxes, scores, classes, names, masks=None):
        """From array-likes, with the dtypes above."""
        return cls(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                   np.asarray(classes, np.int64), tuple(str(n) for n in names),
                   None if masks is None else np.asarray(masks, bool))

    def above(self, score_threshold):
        """The detections scoring at least ``score_threshold`` (a prefix: scores are sorted),
        masks included."""
        keep = int(np.sum(self.scores >= score_threshold))
        return Detections(self.boxes[:keep], self.scores[:keep], self.classes[:keep],
                          self.names[:keep], None if self.masks is None else self.masks[:keep])


def rgb_uint8(image):
    """The input every predictor takes: a NumPy uint8 image [H, W, 3] RGB. Grayscale
    ([H, W] or [H, W, 1]) is repeated to RGB and an alpha channel dropped; anything else
    (float pixels, an empty image, a batch) is a ValueError saying what was given."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (0-255 RGB), got {image.dtype}; convert "
                         "with np.clip(x, 0, 255).astype(np.uint8) if they are 0-255 floats")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected one RGB image [H > 0, W > 0, 3] (grayscale [H, W] and "
                         f"RGBA are converted), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[..., :3]
