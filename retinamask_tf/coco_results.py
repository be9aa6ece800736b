"""Detections as COCO result dicts: the one writer used by evaluation, the LiteRT
evaluation and ``--mode=predict``; ``ResultsFile`` streams them to a JSON file.

A result is ``{"image_id", "category_id", "bbox": [x, y, width, height], "score"}`` in
original-image pixels (boxes rounded to 0.01 px, scores to 1e-5), with an RLE
``"segmentation"`` where the detection has a mask. pycocotools' ``loadRes`` reads a list
whose first entry has a bbox as bbox results (mask areas then come from the boxes), so
``split_by_iou_type`` gives COCOeval one list per kind.
"""

import json
import os

import numpy as np


def to_coco_results(image_id, boxes, scores, category_ids, masks=None, file_name=None):
    """One image's detections -> COCO result dicts.

    Args:
      image_id: the image's id.
      boxes: [n, 4] yxyx, pixels of the original image.
      scores: [n]; category_ids: [n] the dataset's category ids.
      masks: optional [k, H, W] bool/uint8 masks at the image's size of the first k <= n
        detections (RLE-encoded into ``segmentation``).
      file_name: added to each result when given (``--mode=predict``'s results.json).
    Returns:
      list of n dicts, in the order given.
    """
    rles = []
    if masks is not None and len(masks):
        from pycocotools import mask as mask_utils
        rles = mask_utils.encode(np.asfortranarray(
            np.asarray(masks).transpose(1, 2, 0).astype(np.uint8)))
    results = []
    for i, (box, score, cid) in enumerate(zip(boxes, scores, category_ids)):
        y0, x0, y1, x1 = (float(v) for v in box)
        r = {"image_id": int(image_id), "category_id": int(cid),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
             "score": round(float(score), 5)}
        if file_name is not None:
            r["file_name"] = file_name
        if i < len(rles):
            r["segmentation"] = {"size": [int(v) for v in rles[i]["size"]],
                                 "counts": rles[i]["counts"].decode("ascii")}
        results.append(r)
    return results


def split_by_iou_type(results):
    """(bbox results, segm results): every result without its segmentation, and the
    results that have one without their bbox (so that COCOeval takes mask areas)."""
    bbox = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    segm = [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
    return bbox, segm


class ResultsFile:
    """A JSON list of results written as they come (``add``), so that memory does not
    grow with their number (val2017: 500k detections, 250k masks). The list is written to
    ``path + ".partial"`` and takes its name at ``close``: a stopped run never leaves a
    truncated file under the final name."""

    def __init__(self, path):
        self.path, self.count = path, 0
        self._file = open(path + ".partial", "w")
        self._file.write("[")

    def add(self, results):
        for r in results:
            self._file.write(("," if self.count else "") + json.dumps(r))
            self.count += 1

    def close(self):
        self._file.write("]")
        self._file.close()
        os.replace(self.path + ".partial", self.path)
