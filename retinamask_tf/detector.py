"""The Python API for detection: a trained run directory -> detections on NumPy images.

    from retinamask_tf import Detector
    detector = Detector.from_run_dir("runs/demo")        # latest checkpoint
    det = detector(image)                                # [H, W, 3] uint8 RGB
    det["boxes"], det["scores"], det["names"], det["masks"]

The image goes through the same resize-and-pad as training and the SavedModel; the
outputs are in its own pixels.
"""

import numpy as np
import tensorflow as tf

from retinamask_tf import run_dir
from retinamask_tf.ops import pixels, resize
from retinamask_tf.ops.masks import paste_masks


def pasted_masks(masks, boxes, height, width, threshold):
    """Box-frame mask probabilities [k, m, m] -> [k, height, width] bool (None stays None)."""
    if masks is None:
        return None
    if len(masks) == 0:
        return np.zeros((0, height, width), bool)
    return paste_masks(masks, boxes[:len(masks)], height, width, threshold).numpy()


class Detector:
    """A restored model (``run_dir.restore``) with its preprocessing and label map.

    Calling it on one RGB image ``[H, W, 3]`` uint8 returns NumPy arrays in the image's
    pixels: boxes [n, 4] yxyx, scores [n], category_ids [n] (the dataset's ids), names [n],
    and masks [k, H, W] bool for the first k = ``model.mask_head.num_masks`` detections
    when the model has its mask branch, else None.
    """

    def __init__(self, restored, with_masks=None, mask_threshold=None):
        model, config = restored.model, restored.config
        self.model, self.config = model, config
        self.with_masks = model.has_masks if with_masks is None else bool(with_masks)
        self.class_ids = np.asarray(restored.class_ids)
        self.class_names = list(restored.class_names)
        self.step = restored.step
        self.short_side, self.long_side = config.data.short_side, config.data.long_side
        self.pad_value = pixels.pad_pixel(config)
        self.image_size = tuple(model.image_size)
        self.mask_threshold = (config.model.mask_head.mask_threshold if mask_threshold is None
                               else mask_threshold)
        with_masks = self.with_masks
        self._detect = tf.function(lambda padded, info: model.detect(padded, info,
                                                                     with_masks=with_masks))

    @classmethod
    def from_run_dir(cls, model_dir, checkpoint=None, include_masks=None, overrides=(),
                     mask_threshold=None):
        """The run's latest checkpoint (or ``checkpoint``), with its mask branch when it
        has one (``include_masks=False``: detection only). ``overrides``: ``key=value``
        post-processing settings, e.g. ``postprocess.score_threshold=0.3``.
        Raises ``run_dir.RunDirError`` or ``ConfigError`` naming what is wrong."""
        return cls(run_dir.restore(model_dir, include_masks, checkpoint, tuple(overrides)),
                   mask_threshold=mask_threshold)

    def __call__(self, image):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected an RGB image [H>0, W>0, 3], got shape {image.shape}")
        padded, info = resize.resize_and_pad(tf.cast(image, tf.float32), self.short_side,
                                             self.long_side, self.image_size,
                                             pad_value=self.pad_value)
        det = {k: v.numpy()[0] for k, v in self._detect(padded[None], info[None]).items()}
        n = int(det["num_detections"])
        boxes, classes = det["boxes"][:n], det["classes"][:n]
        masks = det["masks"][:n] if self.with_masks else None
        return {"boxes": boxes, "scores": det["scores"][:n],
                "category_ids": self.class_ids[classes],
                "names": [self.class_names[c] for c in classes],
                "masks": pasted_masks(masks, boxes, image.shape[0], image.shape[1],
                                      self.mask_threshold)}
