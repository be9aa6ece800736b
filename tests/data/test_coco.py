import json

import numpy as np
import pytest

from retinamask_tf.data import coco, coco_annotations, instance_masks
from retinamask_tf.data.segmentations import pack_all, unpack


def test_coco128_real_file(coco128):
    json_path, images = coco128
    raw = json.load(open(json_path))
    ds = coco.load_coco(json_path, images, crowd="drop")
    assert len(ds.records) == 128
    assert ds.num_classes == 80
    assert ds.class_ids[0] == 1 and ds.class_ids[-1] == 90  # non-contiguous ids, mapped and back
    assert ds.class_names[ds.class_ids.index(1)] == "person"
    n_crowd = sum(a["iscrowd"] for a in raw["annotations"])
    assert n_crowd == 10
    kept = sum(len(r.boxes) for r in ds.records)
    assert kept == len(raw["annotations"]) - n_crowd
    ignore = coco.load_coco(json_path, images, crowd="ignore")
    assert sum(int(r.is_crowd.sum()) for r in ignore.records) == 10
    # One annotation, checked by hand: COCO xywh -> yxyx, category id -> contiguous index.
    ann = next(a for a in raw["annotations"] if not a["iscrowd"])
    rec = next(r for r in ds.records if r.image_id == ann["image_id"])
    i = list(rec.ann_ids).index(ann["id"])
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(rec.boxes[i], [y, x, y + h, x + w], rtol=1e-5)
    assert ds.class_ids[rec.classes[i]] == ann["category_id"]
    assert all(r.width > 0 and r.height > 0 and r.path.endswith(".jpg") for r in ds.records)


def test_coco128_masks_match_pycocotools(coco128):
    """Polygons (several parts), kept packed by the reader, and the crowd RLEs through
    ``pack_all`` (the reader keeps no crowd masks: they are never targets) decode exactly
    as pycocotools' annToMask. (COCO's ``area`` is the polygon's or a precomputed area,
    not the pixel count.)"""
    from pycocotools.coco import COCO
    json_path, images = coco128
    ds = coco.load_coco(json_path, images, crowd="ignore")
    gt = COCO(json_path)
    checked_multi = 0
    for rec in ds.records[:40]:
        for ann_id, packed, crowd in zip(rec.ann_ids, rec.segmentations, rec.is_crowd):
            assert (packed is None) == crowd
            if crowd:
                continue
            seg = unpack(packed)
            mask = instance_masks.segmentation_to_mask(seg, rec.height, rec.width)
            np.testing.assert_array_equal(mask, gt.annToMask(gt.anns[int(ann_id)]))
            checked_multi += len(seg) > 1
    crowd = [a for a in gt.anns.values() if a["iscrowd"]]
    sizes = [(gt.imgs[a["image_id"]]["height"], gt.imgs[a["image_id"]]["width"]) for a in crowd]
    packed, problems = pack_all([a["segmentation"] for a in crowd], *zip(*sizes))
    assert len(crowd) == 10 and not any(problems)
    for ann, data, (h, w) in zip(crowd, packed, sizes):
        np.testing.assert_array_equal(instance_masks.segmentation_to_mask(unpack(data), h, w),
                                      gt.annToMask(ann))
    assert checked_multi >= 1


def test_fruits_nuts(fruits_nuts):
    ds = coco.load_coco(f"{fruits_nuts}/train.json", f"{fruits_nuts}/images")
    assert ds.class_names == ["date", "fig", "hazelnut"] and ds.class_ids == [1, 2, 3]
    assert len(ds.records) == 14 and sum(len(r.boxes) for r in ds.records) == 123
    # This set's ``area`` is the rasterised pixel count: our masks must reproduce it exactly.
    raw = {a["id"]: a for a in json.load(open(f"{fruits_nuts}/train.json"))["annotations"]}
    for rec in ds.records:
        for ann_id, seg in zip(rec.ann_ids, rec.segmentations):
            mask = instance_masks.segmentation_to_mask(unpack(seg), rec.height, rec.width)
            assert int(mask.sum()) == raw[int(ann_id)]["area"], ann_id


def _write(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path)


def _minimal():
    return {"images": [{"id": 7, "file_name": "a.jpg", "height": 50, "width": 60}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 30],
                             "iscrowd": 0, "area": 600, "segmentation": [[10, 5, 30, 5, 30, 35]]}],
            "categories": [{"id": 3, "name": "thing"}]}


def test_bad_files_are_rejected_with_names(tmp_path):
    with pytest.raises(coco.DatasetError, match="not found"):
        coco.load_coco(str(tmp_path / "nope.json"), str(tmp_path))
    with pytest.raises(coco.DatasetError, match="not a COCO instances file"):
        coco.load_coco(_write(tmp_path, {"hello": 1}), str(tmp_path))
    data = _minimal()
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(coco.DatasetError, match=r"annotation 1 \(image 7\).*category id 99"):
        coco.load_coco(_write(tmp_path, data), str(tmp_path))
    data = _minimal()
    data["annotations"].append(dict(data["annotations"][0]))
    with pytest.raises(coco.DatasetError, match="duplicate annotation id 1"):
        coco.load_coco(_write(tmp_path, data), str(tmp_path))


def test_degenerate_boxes_are_skipped_and_counted(tmp_path, caplog):
    data = _minimal()
    data["annotations"].append({"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 5, 0, 30],
                                "iscrowd": 0, "segmentation": []})
    data["annotations"].append({"id": 3, "image_id": 7, "category_id": 3,
                                "bbox": [50, 40, 100, 100], "iscrowd": 0, "segmentation": []})
    ds = coco.load_coco(_write(tmp_path, data), str(tmp_path))
    rec = ds.records[0]
    assert list(rec.ann_ids) == [1, 3]
    np.testing.assert_allclose(rec.boxes[1], [40, 50, 50, 60])  # clipped to the 50x60 image
    assert ds.skipped == {"empty box (zero size or outside the image)": 1}
    assert "annotation 2 of image 7" in caplog.text


def test_rle_size_mismatch_is_an_error():
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(np.ones((4, 5), np.uint8)))
    with pytest.raises(coco.DatasetError, match="RLE size"):
        instance_masks.segmentation_to_mask(rle, 5, 5)
    np.testing.assert_array_equal(instance_masks.segmentation_to_mask(rle, 4, 5), np.ones((4, 5)))


def test_masks_off_reads_the_same_boxes_and_no_segmentation(coco128):
    json_path, images = coco128
    with_masks = coco.load_coco(json_path, images)
    boxes_only = coco.load_coco(json_path, images, masks=False)
    assert [r.image_id for r in boxes_only.records] == [r.image_id for r in with_masks.records]
    for a, b in zip(with_masks.records, boxes_only.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.ann_ids, b.ann_ids)
        assert b.segmentations == [None] * len(b.boxes)
    assert with_masks.has_masks and not boxes_only.has_masks
    assert "masks not read" in boxes_only.summary()
    assert "masks not read" not in with_masks.summary()


def test_packing_in_chunks_changes_nothing(coco128, monkeypatch):
    """Segmentations are packed a chunk at a time while the file is read; where the chunks
    end changes no record and no count (coco128 has crowd RLEs between the polygons)."""
    json_path, images = coco128
    whole = coco.load_coco(json_path, images, crowd="ignore")
    monkeypatch.setattr(coco_annotations, "PACK_EVERY", 7)
    chunked = coco.load_coco(json_path, images, crowd="ignore")
    assert chunked.skipped_masks == whole.skipped_masks
    for a, b in zip(whole.records, chunked.records):
        assert a.segmentations == b.segmentations
        np.testing.assert_array_equal(a.is_crowd, b.is_crowd)
    assert sum(s is not None for r in whole.records for s in r.segmentations) == 929
