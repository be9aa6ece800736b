"""Detections from a training run directory's checkpoint (the Keras model itself).

One of the three predictors ``retinamask_tf.load`` returns (with the SavedModel's and the
TFLite file's); all take one uint8 RGB image and return ``detections.Detections``. The
image goes through the same resize-and-pad as training and the SavedModel; the outputs
are in its own pixels.
"""

import numpy as np
import tensorflow as tf

from retinamask_tf import run_dir
from retinamask_tf.detections import Detections, rgb_uint8
from retinamask_tf.ops import pixels, resize
from retinamask_tf.mask_paste import paste_masks


class CheckpointPredictor:
    """A restored run (``run_dir.restore``) with its preprocessing and label map; calling it
    on a uint8 RGB image returns ``Detections`` (masks when the restored model has its
    mask branch)."""

    def __init__(self, restored):
        model, config = restored.model, restored.config
        self.model, self.config = model, config
        self.has_masks = model.has_masks
        self.class_ids = np.asarray(restored.class_ids, np.int64)
        self.class_names = list(restored.class_names)
        self.step = restored.step
        self.source = f"{restored.checkpoint} (checkpoint)"
        self.short_side, self.long_side = config.data.short_side, config.data.long_side
        self.pad_value = pixels.pad_pixel(config)
        self.image_size = tuple(model.image_size)
        self.mask_threshold = config.model.mask_head.mask_threshold
        with_masks = self.has_masks
        self._detect = tf.function(lambda padded, info: model.detect(padded, info,
                                                                     with_masks=with_masks))

    @classmethod
    def from_run_dir(cls, model_dir, include_masks=None, overrides=(), checkpoint=None):
        """The run's latest checkpoint (or ``checkpoint``), with its mask branch when it has
        one (``include_masks=False``: detection only). ``overrides``: ``key=value``
        inference settings, e.g. ``postprocess.score_threshold=0.3``.
        Raises ``run_dir.RunDirError`` or ``ConfigError`` naming what is wrong."""
        return cls(run_dir.restore(model_dir, include_masks, checkpoint, tuple(overrides)))

    def __call__(self, image):
        image = rgb_uint8(image)
        padded, info = resize.resize_and_pad(tf.cast(image, tf.float32), self.short_side,
                                             self.long_side, self.image_size,
                                             pad_value=self.pad_value)
        det = {k: v.numpy()[0] for k, v in self._detect(padded[None], info[None]).items()}
        n = int(det["num_detections"])
        boxes, classes = det["boxes"][:n], det["classes"][:n]
        masks = det["masks"][:n] if self.has_masks else None
        return Detections.build(boxes, det["scores"][:n], self.class_ids[classes],
                                [self.class_names[c] for c in classes],
                                paste_masks(masks, boxes, image.shape[0], image.shape[1],
                                            self.mask_threshold))
