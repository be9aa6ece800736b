"""Detections on image files, from a training checkpoint or an exported SavedModel: drawn
images and a COCO-style results JSON (``main.py --mode=predict``).

Both predictors (``detector.Detector`` for a run directory, ``SavedModelPredictor`` for an
export) take one RGB image ``[H, W, 3]`` uint8 and return numpy arrays in its own pixels:
boxes [n, 4] yxyx, scores [n], category_ids [n] (the dataset's ids), names [n], and masks
[k, H, W] bool for the first k detections (k = the model's ``num_masks``) when the model
has a mask head (a SavedModel exported with ``--include_masks``), else None.
"""

import os

import tensorflow as tf

from retinamask_tf.coco_results import ResultsFile, to_coco_results
from retinamask_tf.detector import pasted_masks
from retinamask_tf.image_io import READ_ERRORS, read_rgb
from retinamask_tf.run_dir import read_label_map


class SavedModelPredictor:
    """``serving_default`` of an exported SavedModel (or of the highest version under a TF
    Serving base folder); class names from its label map asset."""

    def __init__(self, export_dir, mask_threshold=0.5):
        from retinamask_tf.export.saved_model import resolve_servable
        export_dir = self.export_dir = resolve_servable(export_dir)
        self.serving = tf.saved_model.load(export_dir).signatures["serving_default"]
        self.names = dict(zip(*read_label_map(os.path.join(export_dir, "assets"))))
        self.mask_threshold = mask_threshold

    def __call__(self, image):
        out = {k: v.numpy()[0] for k, v in self.serving(images=tf.constant(image[None])).items()}
        n = int(out["num_detections"])
        boxes, ids = out["detection_boxes"][:n], out["detection_classes"][:n]
        masks = out["detection_masks"][:n] if "detection_masks" in out else None
        return {"boxes": boxes, "scores": out["detection_scores"][:n], "category_ids": ids,
                "names": [self.names.get(int(c), str(int(c))) for c in ids],
                "masks": pasted_masks(masks, boxes, image.shape[0], image.shape[1],
                                      self.mask_threshold)}


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
    results = ResultsFile(os.path.join(out_dir, "results.json"))  # written as they come
    drawn, failed = [], []
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
        results.add(to_coco_results(i + 1, det["boxes"], det["scores"], det["category_ids"],
                                       det["masks"], file_name=path))
        stem = os.path.splitext(os.path.basename(path))[0]
        name = stem if stem not in used else f"{stem}_{i + 1}"
        used.add(name)
        out = os.path.join(out_dir, name + ".png")
        draw(image, det, score_threshold).save(out)
        drawn.append(out)
        if progress:
            progress.update(i + 1)
    results.close()
    return {"results_json": results.path, "drawn": drawn, "failed": failed,
            "num_detections": results.count}
