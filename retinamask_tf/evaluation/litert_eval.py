"""COCO bbox AP of an exported model (a TFLite model in LiteRT, or any detector with the
same ``detect(image)``) on a split."""

from retinamask_tf.coco_results import to_coco_results
from retinamask_tf.evaluation.coco_evaluator import coco_metrics
from retinamask_tf.image_io import read_rgb
from retinamask_tf.progress import Progress


def evaluate_litert(detector, dataset, max_images=None, progress=True):
    """Runs a ``LiteRTDetector`` (or anything whose ``detect(image [H, W, 3] uint8)`` returns
    boxes [n, 4] yxyx original pixels, scores [n], classes [n] category ids) over a
    CocoDataset's images, one at a time, and scores them.

    Returns:
      dict: ``bbox`` metrics (AP, AP50, ...), ``per_class``, ``num_images``,
      ``num_detections``, ``results`` (COCO result dicts).
    """
    records = dataset.records[:max_images] if max_images else dataset.records
    results = []
    bar = Progress(len(records), unit="image") if progress else None
    for i, record in enumerate(records):
        image = read_rgb(record.path, record.orientation)  # the annotations' frame
        det = detector.detect(image)
        results.extend(to_coco_results(record.image_id, det["boxes"], det["scores"],
                                       det["classes"]))
        if bar:
            bar.update(i + 1)
    metrics, per_class, _ = coco_metrics(dataset.json_path, results,
                                         [r.image_id for r in records], "bbox")
    return {"bbox": metrics, "per_class": per_class, "num_images": len(records),
            "num_detections": len(results), "results": results}
