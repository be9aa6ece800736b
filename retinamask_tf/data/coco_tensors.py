"""In-memory COCO records as the tensors of ``CocoDataset.read_examples``."""

import json
import os

import numpy as np


def records_to_tensors(records, max_instances, with_masks=False):
    """Pads each image's annotations to ``max_instances`` rows.

    Returns:
      dict of numpy arrays with leading dim = number of images: path, image_id,
      boxes [n, M, 4], classes [n, M], crowd [n, M], valid [n, M]; with masks
      also height, width [n], mask_valid [n, M] and segmentations [n] (a JSON list
      of M entries, null where there is no usable mask); and [(image_id, path, count)]
      of the images that had more than M annotations (the extra rows are dropped,
      keeping the largest boxes).
    """
    n, m = len(records), max_instances
    boxes = np.zeros((n, m, 4), np.float32)
    classes = np.zeros((n, m), np.int32)
    crowd = np.zeros((n, m), bool)
    valid = np.zeros((n, m), bool)
    mask_valid = np.zeros((n, m), bool)
    segmentations = []
    truncated = []
    for i, r in enumerate(records):
        order = np.arange(len(r.boxes))
        if len(order) > m:
            truncated.append((r.image_id, r.path, len(order)))
            area = (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
            order = np.sort(np.argsort(-area, kind="stable")[:m])
        k = len(order)
        boxes[i, :k] = r.boxes[order]
        classes[i, :k] = r.classes[order]
        crowd[i, :k] = r.is_crowd[order]
        valid[i, :k] = True
        if with_masks:
            segs = [r.segmentations[j] if not r.is_crowd[j] else None for j in order]
            mask_valid[i, :k] = [s is not None for s in segs]
            segmentations.append(json.dumps(segs + [None] * (m - k)))
    # Paths as the file system's bytes: a name that is not UTF-8 (read from the JSON as
    # surrogate escapes) still opens.
    tensors = {"path": np.array([os.fsencode(r.path) for r in records], dtype=object),
               "image_id": np.array([r.image_id for r in records], np.int64),
               "orientation": np.array([r.orientation for r in records], np.int32),
               "boxes": boxes, "classes": classes, "crowd": crowd, "valid": valid}
    if with_masks:
        tensors.update(height=np.array([r.height for r in records], np.int32),
                       width=np.array([r.width for r in records], np.int32),
                       mask_valid=mask_valid, segmentations=np.array(segmentations))
    return tensors, truncated
