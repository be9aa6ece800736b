"""The dataset inspector: class counts, histograms and anchor coverage checked against an
independent NumPy IoU, and its report files."""

import json
import os

import numpy as np
from PIL import Image

from retinamask_tf import config as C
from retinamask_tf.data import coco, inspector
from retinamask_tf.ops import anchors as anchor_ops


def _np_iou(a, b):
    """[N, 4] x [G, 4] yxyx -> [N, G]."""
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


def _dataset(tmp_path):
    """Two 512x384 images (resized by 0.5 to the 256 model input): a square box, a thin
    10:1 one (no anchor reaches IoU 0.5), a crowd box (left out) and a mask."""
    Image.fromarray(np.full((384, 512, 3), 90, np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((384, 512, 3), 90, np.uint8)).save(tmp_path / "b.jpg")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [64, 64, 128, 128], "iscrowd": 0,
         "segmentation": [[64, 64, 192, 64, 192, 192, 64, 192]]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [300, 40, 200, 20], "iscrowd": 0,
         "segmentation": [[300, 40, 500, 40, 500, 60, 300, 60]]},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [10, 10, 300, 300], "iscrowd": 1,
         "segmentation": [[10, 10, 310, 10, 310, 310]]},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [200, 100, 96, 64], "iscrowd": 0,
         "segmentation": [[200, 100, 296, 100, 296, 164, 200, 164]]},
    ]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 384, "width": 512},
                       {"id": 2, "file_name": "b.jpg", "height": 384, "width": 512}],
            "annotations": anns, "categories": [{"id": 1, "name": "square"},
                                                {"id": 2, "name": "stick"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return coco.load_coco(str(tmp_path / "ann.json"), str(tmp_path), crowd="ignore")


def test_statistics_and_anchor_coverage(tmp_path):
    ds = _dataset(tmp_path)
    cfg = C.load_config([], ["data.short_side=256", "data.long_side=256"])
    stats = inspector.inspect_dataset(ds, cfg)
    assert stats["num_boxes"] == 3  # the crowd box is left out
    assert [c["count"] for c in stats["per_class"]] == [2, 1]
    assert sum(stats["size_hist"]["counts"]) == 3
    # sqrt(area) in the model input (scale 0.5): square 64, stick 31.6, box 39.2 px.
    hist = dict(zip(stats["size_hist"]["labels"], stats["size_hist"]["counts"]))
    assert (hist["16-32"], hist["32-64"], hist["64-96"]) == (1, 1, 1)
    # log2(h / w) of the stick: log2(10 / 100) = -3.3.
    assert stats["aspect_hist"]["counts"][stats["aspect_hist"]["labels"].index("<-3")] == 1
    a = cfg.anchors
    anchors, _ = anchor_ops.generate_anchors(cfg.image_size, a.min_level, a.max_level,
                                             a.num_scales, tuple(a.aspect_ratios), a.anchor_scale)
    boxes = np.array([[32, 32, 96, 96], [20, 150, 30, 250], [50, 100, 82, 148]], np.float32)
    best = _np_iou(anchors.numpy(), boxes).max(0)
    assert best[1] < 0.5 <= min(best[0], best[2])  # the stick has no anchor at 0.5
    cov = stats["coverage"]
    assert cov["no_anchor_at_threshold"] == 1
    assert cov["rescued_by_best_matching"] == 1 and cov["uncovered"] == 0
    worst = stats["worst"][0]
    assert (worst["image_id"], worst["ann_id"], worst["class"]) == (1, 2, "stick")
    np.testing.assert_allclose(worst["best_iou"], best[1], atol=1e-3)
    # Plain RetinaNet matching leaves the stick untrained.
    plain = C.replace(cfg, **{"matcher.best_match_threshold": None})
    assert inspector.inspect_dataset(ds, plain)["coverage"]["uncovered"] == 1
    assert "no anchor at IoU >= 0.5: 1 (33.3%)" in inspector.format_report(stats)


def test_report_files(tmp_path):
    ds = _dataset(tmp_path)
    cfg = C.load_config([], ["data.short_side=256", "data.long_side=256"])
    stats, paths = inspector.write_report(ds, cfg, str(tmp_path / "out"))
    assert json.load(open(paths["stats"]))["num_boxes"] == stats["num_boxes"] == 3
    assert len(paths["drawn"]) == 2
    drawn = np.asarray(Image.open(paths["drawn"][0]))
    assert drawn.shape == (384, 512, 3)
    # The square's mask is blended in its class colour; outside every box the image is unchanged.
    assert np.abs(drawn[128, 128].astype(int) - 90).max() > 20
    np.testing.assert_array_equal(drawn[300, 20], [90, 90, 90])
    try:
        import matplotlib  # noqa: F401
        assert os.path.getsize(paths["plots"]) > 1000
    except ImportError:
        assert "plots" not in paths
