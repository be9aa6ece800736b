"""Detections from one image's outputs of an exported detector, whatever ran it.

Every export (SavedModel, TFLite, OpenVINO IR) has the same output names: one image's
``num_detections`` (scalar), ``detection_boxes`` [N, 4] (ymin, xmin, ymax, xmax) in pixels
of the model's input, ``detection_scores`` [N], ``detection_classes`` [N] (category ids),
and with masks ``detection_masks`` [N, M, M] (box-relative probabilities). NumPy only: the
LiteRT runner uses it without TensorFlow.
"""

import numpy as np

from retinamask_tf.detections import Detections
from retinamask_tf.mask_paste import paste_masks


def detections_from_outputs(out, names, height, width, mask_threshold=0.5, box_scale=None):
    """The first ``num_detections`` rows of ``out`` as ``Detections`` of a ``height`` x
    ``width`` image.

    Args:
      out: {output name: one image's array} (the batch dimension already taken off).
      names: {category id: class name}; an id without one is named by its number.
      height, width: the input image's size in pixels (masks are pasted at it).
      mask_threshold: probability at which a pasted mask pixel is on.
      box_scale: None when the boxes are in the image's pixels; else the model input's
        pixels per image pixel, (y, x), for a letterboxed input (boxes are divided by it
        and clipped to the image).
    """
    n = int(out["num_detections"])
    boxes, ids = out["detection_boxes"][:n], out["detection_classes"][:n]
    if box_scale is not None:
        boxes = np.clip(boxes / np.tile(box_scale, 2)[None], 0, [height, width, height, width])
    masks = out["detection_masks"][:n] if "detection_masks" in out else None
    return Detections.build(boxes, out["detection_scores"][:n], ids,
                            [names.get(int(c), str(int(c))) for c in ids],
                            paste_masks(masks, boxes, height, width, mask_threshold))
