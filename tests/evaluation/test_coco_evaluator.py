import json
import os

import numpy as np
import pytest

from retinamask_tf import config as C
from retinamask_tf.coco_results import ResultsFile, split_by_iou_type, to_coco_results
from retinamask_tf.data import coco, instance_masks
from retinamask_tf.evaluation import coco_evaluator as ev
from retinamask_tf.modeling import factory


def test_batch_to_coco_maps_ids_and_boxes():
    det = {"boxes": np.array([[[10, 20, 40, 60], [0, 0, 0, 0]]], np.float32),
           "scores": np.array([[0.9, 0.0]], np.float32),
           "classes": np.array([[1, 0]], np.int32), "num_detections": np.array([1])}
    out = ev.batch_to_coco(det, [42], class_ids=[5, 90])
    assert out == [{"image_id": 42, "category_id": 90, "bbox": [20.0, 10.0, 40.0, 30.0],
                    "score": 0.9}]


def test_to_coco_results_masks_and_split():
    """A 2x3 mask RLE-encodes (column-major counts), file_name rides along, and the split
    gives COCOeval bbox results without masks and segm results without boxes."""
    mask = np.array([[[0, 1, 1], [0, 1, 0]]], bool)
    out = to_coco_results(7, np.array([[0.0, 1, 2, 3], [1, 1, 2, 2]]), [0.5, 0.25], [3, 4],
                          mask, file_name="a.jpg")
    assert out[0]["segmentation"] == {"size": [2, 3], "counts": "231"}
    assert out[0]["file_name"] == out[1]["file_name"] == "a.jpg"
    assert "segmentation" not in out[1] and out[1]["bbox"] == [1.0, 1.0, 1.0, 1.0]
    bbox, segm = split_by_iou_type(out)
    assert [sorted(r) for r in bbox] == [["bbox", "category_id", "file_name", "image_id",
                                          "score"]] * 2
    assert len(segm) == 1 and "bbox" not in segm[0] and segm[0]["score"] == 0.5


def test_ground_truth_scores_perfectly_and_noise_does_not(fruits_nuts):
    val = f"{fruits_nuts}/val.json"
    data = json.load(open(val))
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 1.0} for a in data["annotations"]]
    ids = [i["id"] for i in data["images"]]
    metrics, per_class, _ = ev.coco_metrics(val, perfect, ids)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert [r["name"] for r in per_class] == ["date", "fig", "hazelnut"]
    assert sum(r["num_gt"] for r in per_class) == 42
    # Boxes shifted by half their width: IoU 1/3 -> below every COCO threshold.
    shifted = [dict(r, bbox=[r["bbox"][0] + r["bbox"][2] / 2] + r["bbox"][1:]) for r in perfect]
    metrics, _, _ = ev.coco_metrics(val, shifted, ids)
    assert metrics["AP"] == 0.0
    # Wrong class everywhere.
    wrong = [dict(r, category_id=r["category_id"] % 3 + 1) for r in perfect]
    assert ev.coco_metrics(val, wrong, ids)[0]["AP"] == 0.0
    assert ev.coco_metrics(val, [], ids)[0]["AP"] == 0.0
    assert "| date | 1 |" in ev.format_table(per_class)


def test_no_ground_truth_of_a_size_is_absent_not_zero(tmp_path):
    # Two large objects only: COCOeval returns -1 for the small/medium ranges, which must
    # read as absent (None, "-"), not as a failing 0.000; a class without ground truth too.
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 200, "width": 200}],
          "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "never"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                           "bbox": b, "area": b[2] * b[3]}
                          for i, b in enumerate([[0, 0, 120, 120], [50, 60, 140, 130]])]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    perfect = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    metrics, per_class, _ = ev.coco_metrics(str(path), perfect, [1])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APl"] == pytest.approx(1.0)
    for k in ("APs", "APm", "ARs", "ARm"):
        assert metrics[k] is None, k
    assert per_class[1]["AP"] is None and per_class[1]["AP50"] is None
    assert "| never | 2 | 0 | - | - |" in ev.format_table(per_class)
    empty, per_class, _ = ev.coco_metrics(str(path), [], [1])
    assert empty["AP"] == 0.0 and empty["APl"] == 0.0 and empty["APs"] is None
    assert per_class[0]["AP"] == 0.0 and per_class[1]["AP"] is None
    assert ev.fmt(None) == "-" and ev.fmt(0.25) == "0.250"


def _tiny_model(shapes, batch_size):
    """(config, val split, random model) of a tiny RetinaMask at 128 px whose score
    threshold 0 gives 100 detections (masks for 50) per image."""
    cfg = C.load_config([], ["data.short_side=128", "data.long_side=128", "model.backbone.depth=18",
                             "model.backbone.width=8", "model.fpn.channels=16",
                             "model.head.channels=16", "model.head.num_convs=1",
                             "model.mask_head.channels=16", "model.mask_head.num_convs=1",
                             "postprocess.score_threshold=0.0", f"eval.batch_size={batch_size}"])
    val = coco.load_coco(shapes["val_json"], shapes["val_images"])
    return cfg, val, factory.build_model(cfg, val.num_classes)


def test_evaluate_runs_a_model_over_a_split(tiny_shapes, tmp_path):
    cfg, val, model = _tiny_model(tiny_shapes, batch_size=5)
    report = ev.evaluate(model, val, cfg, out_dir=str(tmp_path), step=7, progress=False)
    assert report["num_images"] == 12 and report["num_detections"] == 12 * 100
    assert report["skipped_images"] == 0
    saved = json.load(open(tmp_path / "metrics_7.json"))
    assert set(saved["bbox"]) == set(ev.STAT_NAMES)
    dets = json.load(open(tmp_path / "detections_7.json"))
    assert {d["category_id"] for d in dets} <= set(val.class_ids)
    assert all(d["bbox"][0] >= 0 and d["bbox"][0] + d["bbox"][2] <= 128.01 for d in dets)
    assert set(saved["segm"]) == set(ev.STAT_NAMES)  # the default model has a mask head
    segms = json.load(open(tmp_path / "segmentations_7.json"))
    assert len(segms) == 12 * cfg.model.mask_head.num_masks
    assert all(s["segmentation"]["size"] == [128, 128] for s in segms)


def _gt_as_mask_detections(ds, rec, shift=0.0):
    """Ground truth as a ``detect`` output: boxes + 28x28 box-frame masks."""
    n = len(rec.boxes)
    masks = instance_masks.rasterize_instances(rec.segmentations, rec.boxes,
                                               rec.height, rec.width, 28).astype(np.float32)
    boxes = rec.boxes.copy()
    boxes[:, [1, 3]] += shift * (boxes[:, 3:4] - boxes[:, 1:2])
    return {"boxes": boxes[None], "scores": np.ones((1, n), np.float32),
            "classes": rec.classes[None], "num_detections": np.array([n]), "masks": masks[None]}


def test_ground_truth_masks_score_high_in_segm(fruits_nuts):
    val = f"{fruits_nuts}/val.json"
    ds = coco.load_coco(val, f"{fruits_nuts}/images")
    for shift, low, high in ((0.0, 0.9, 1.0), (0.5, 0.0, 0.0)):
        results = []
        for rec in ds.records:
            det = _gt_as_mask_detections(ds, rec, shift)
            results += split_by_iou_type(ev.batch_to_coco(
                det, [rec.image_id], ds.class_ids, [(rec.height, rec.width)]))[1]
        metrics, _, _ = ev.coco_metrics(val, results, [r.image_id for r in ds.records],
                                                "segm")
        assert low <= metrics["AP"] <= high, (shift, metrics["AP"])


def test_results_file_streams_a_json_list(tmp_path):
    path = str(tmp_path / "dets.json")
    out = ResultsFile(path)
    rows = [{"image_id": i, "score": 0.5} for i in range(5)]
    out.add(rows[:2])
    out.add([])
    out.add(rows[2:])
    assert out.count == 5 and not (tmp_path / "dets.json").exists()  # only .partial so far
    out.close()
    assert json.load(open(path)) == rows and not (tmp_path / "dets.json.partial").exists()
    empty = ResultsFile(str(tmp_path / "none.json"))
    empty.close()
    assert json.load(open(tmp_path / "none.json")) == []


def test_evaluate_writes_detections_as_they_come(tiny_shapes, tmp_path, monkeypatch):
    """Each batch's detections are on disk before the next batch is detected (nothing
    holds the split's results), and COCOeval scores the written file."""
    sizes = []

    class Spy(ResultsFile):
        def add(self, results):
            super().add(results)
            self._file.flush()
            sizes.append((os.path.basename(self.path), os.path.getsize(self.path + ".partial")))

    monkeypatch.setattr(ev, "ResultsFile", Spy)
    cfg, val, model = _tiny_model(tiny_shapes, batch_size=4)
    report = ev.evaluate(model, val, cfg, out_dir=str(tmp_path), progress=False)
    for name, per_detection in (("detections.json", 100), ("segmentations.json", 50)):
        grown = [size for n, size in sizes if n == name]
        assert len(grown) == 3 and grown[0] > 1000 and grown[0] < grown[1] < grown[2], grown
        written = json.load(open(tmp_path / name))
        assert len(written) == 12 * per_detection
        assert grown[-1] == os.path.getsize(tmp_path / name) - 1  # all but the closing "]"
    assert report["num_detections"] == 1200 and report["segm"]["AP"] is not None
