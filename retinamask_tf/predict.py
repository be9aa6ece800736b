"""Detections on image files, from a training checkpoint or an exported SavedModel: drawn
images and a COCO-style results JSON (``main.py --mode=predict``).

Both predictors take one RGB image ``[H, W, 3]`` uint8 and return numpy arrays in its own
pixels: boxes [n, 4] yxyx, scores [n], category_ids [n] (the dataset's ids), names [n],
and masks [k, H, W] bool for the first k detections (k = the model's ``num_masks``) when
the model has a mask head (a SavedModel exported with ``--include_masks``), else None.
"""

import json
import os

import numpy as np
import tensorflow as tf

from retinamask_tf.export.label_map import LABEL_MAP_FILE
from retinamask_tf.image_io import READ_ERRORS, read_rgb

def _pasted(masks, boxes, height, width, threshold):
    from retinamask_tf.ops.masks import paste_masks
    if masks is None or len(masks) == 0:
        return masks if masks is None else np.zeros((0, height, width), bool)
    return paste_masks(masks, boxes[:len(masks)], height, width, threshold).numpy()


class CheckpointPredictor:
    """The latest checkpoint of a training directory (or ``checkpoint``), with its mask head
    when the run has one; preprocessing as the SavedModel's (resize, pad)."""

    def __init__(self, model_dir, checkpoint=None, mask_threshold=None):
        from retinamask_tf.export.saved_model import load_for_export
        from retinamask_tf.training.trainer import read_config
        with_masks = read_config(model_dir).model.mask_head.enabled
        model, config, class_ids, class_names = load_for_export(model_dir, with_masks, checkpoint)
        self.class_ids, self.class_names = np.asarray(class_ids), list(class_names)
        self.with_masks = with_masks
        self.short_side, self.long_side = config.data.short_side, config.data.long_side
        self.image_size = tuple(model.image_size)
        self.mask_threshold = (config.model.mask_head.mask_threshold if mask_threshold is None
                               else mask_threshold)
        self._detect = tf.function(lambda padded, info: model.detect(padded, info,
                                                                     with_masks=with_masks))

    def __call__(self, image):
        from retinamask_tf.data import parser
        padded, info = parser.resize_and_pad(tf.cast(image, tf.float32), self.short_side,
                                             self.long_side, self.image_size)
        det = {k: v.numpy()[0] for k, v in self._detect(padded[None], info[None]).items()}
        n = int(det["num_detections"])
        boxes, classes = det["boxes"][:n], det["classes"][:n]
        masks = det["masks"][:n] if self.with_masks else None
        return {"boxes": boxes, "scores": det["scores"][:n],
                "category_ids": self.class_ids[classes],
                "names": [self.class_names[c] for c in classes],
                "masks": _pasted(masks, boxes, image.shape[0], image.shape[1],
                                 self.mask_threshold)}


class SavedModelPredictor:
    """``serving_default`` of an exported SavedModel (or of the highest version under a TF
    Serving base folder); class names from its label map asset."""

    def __init__(self, export_dir, mask_threshold=0.5):
        from retinamask_tf.export.saved_model import resolve_servable
        export_dir = self.export_dir = resolve_servable(export_dir)
        self.serving = tf.saved_model.load(export_dir).signatures["serving_default"]
        with open(os.path.join(export_dir, "assets", LABEL_MAP_FILE)) as f:
            self.names = {e["id"]: e["name"] for e in json.load(f)}
        self.mask_threshold = mask_threshold

    def __call__(self, image):
        out = {k: v.numpy()[0] for k, v in self.serving(images=tf.constant(image[None])).items()}
        n = int(out["num_detections"])
        boxes, ids = out["detection_boxes"][:n], out["detection_classes"][:n]
        masks = out["detection_masks"][:n] if "detection_masks" in out else None
        return {"boxes": boxes, "scores": out["detection_scores"][:n], "category_ids": ids,
                "names": [self.names.get(int(c), str(int(c))) for c in ids],
                "masks": _pasted(masks, boxes, image.shape[0], image.shape[1],
                                 self.mask_threshold)}


def to_coco(det, image_id, file_name):
    """COCO result dicts of one image's detections (RLE ``segmentation`` where it has a
    mask), each with the ``file_name`` it came from."""
    from pycocotools import mask as mask_utils

    rles = []
    if det["masks"] is not None and len(det["masks"]):
        rles = mask_utils.encode(np.asfortranarray(det["masks"].transpose(1, 2, 0).astype(np.uint8)))
    results = []
    for i, (box, score, cid) in enumerate(zip(det["boxes"], det["scores"], det["category_ids"])):
        y0, x0, y1, x1 = (float(v) for v in box)
        r = {"image_id": image_id, "file_name": file_name, "category_id": int(cid),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
             "score": round(float(score), 5)}
        if i < len(rles):
            r["segmentation"] = {"size": [int(v) for v in rles[i]["size"]],
                                 "counts": rles[i]["counts"].decode("ascii")}
        results.append(r)
    return results


def draw(image, det, score_threshold=0.3):
    """The image with the masks (in class colours) and boxes labelled "name score" of the
    detections scoring at least ``score_threshold``; a PIL image."""
    from retinamask_tf.visualize import draw_detections, overlay_masks
    keep = det["scores"] >= score_threshold
    if det["masks"] is not None:
        shown = keep[:len(det["masks"])]
        image = overlay_masks(image, det["masks"][shown], det["category_ids"][:len(shown)][shown])
    names = [n for n, k in zip(det["names"], keep) if k]
    return draw_detections(image, det["boxes"][keep], det["category_ids"][keep],
                           det["scores"][keep], names, score_threshold=score_threshold)


def predict_files(predictor, paths, out_dir, score_threshold=0.3, progress=None):
    """Runs ``predictor`` on every image, writes ``out_dir/<name>.png`` drawings and
    ``out_dir/results.json`` (COCO results, ``image_id`` = position in ``paths`` + 1, with
    ``file_name``). An image that cannot be read or run is reported (``failed``) and
    skipped; the others are still written.

    Returns:
      dict: results_json, drawn (paths), failed ([(path, reason)]), num_detections.
    """
    os.makedirs(out_dir, exist_ok=True)
    results, drawn, failed = [], [], []
    used = set()
    for i, path in enumerate(paths):
        try:
            image = read_rgb(path)  # as displayed (EXIF orientation applied)
        except READ_ERRORS as e:
            failed.append((path, f"unreadable image ({type(e).__name__}: {e})"))
            continue
        try:
            det = predictor(image)
        except (tf.errors.OpError, ValueError) as e:
            failed.append((path, f"the model could not run on it ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:300]})"))
            continue
        results.extend(to_coco(det, i + 1, path))
        stem = os.path.splitext(os.path.basename(path))[0]
        name = stem if stem not in used else f"{stem}_{i + 1}"
        used.add(name)
        out = os.path.join(out_dir, name + ".png")
        draw(image, det, score_threshold).save(out)
        drawn.append(out)
        if progress:
            progress.update(i + 1)
    results_json = os.path.join(out_dir, "results.json")
    with open(results_json, "w") as f:
        json.dump(results, f)
    return {"results_json": results_json, "drawn": drawn, "failed": failed,
            "num_detections": len(results)}
