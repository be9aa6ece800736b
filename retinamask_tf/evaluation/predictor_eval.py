"""COCO bbox AP of any predictor (``retinamask_tf.load``: a run directory, a SavedModel or
a TFLite file) on a split, one image at a time, as a deployment runs it."""

from retinamask_tf.coco_results import to_coco_results
from retinamask_tf.evaluation.coco_evaluator import coco_metrics
from retinamask_tf.image_io import read_rgb
from retinamask_tf.progress import Progress


def evaluate_predictor(predictor, dataset, max_images=None, progress=True):
    """Runs ``predictor`` (image [H, W, 3] uint8 -> ``Detections``) over a CocoDataset's
    images, one at a time, and scores its boxes.

    Returns:
      dict: ``bbox`` metrics (AP, AP50, ...), ``per_class``, ``num_images``,
      ``num_detections``, ``results`` (COCO result dicts).
    """
    records = dataset.records[:max_images] if max_images else dataset.records
    results = []
    bar = Progress(len(records), unit="image") if progress else None
    for i, record in enumerate(records):
        image = read_rgb(record.path, record.orientation)  # the annotations' frame
        det = predictor(image)
        results.extend(to_coco_results(record.image_id, det.boxes, det.scores, det.classes))
        if bar:
            bar.update(i + 1)
    metrics, per_class, _ = coco_metrics(dataset.json_path, results,
                                         [r.image_id for r in records], "bbox")
    return {"bbox": metrics, "per_class": per_class, "num_images": len(records),
            "num_detections": len(results), "results": results}
