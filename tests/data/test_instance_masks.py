"""Box-frame GT masks: rasterisation, bad segmentations, the pipeline."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from retinamask_tf.data import coco, instance_masks, pipeline
from retinamask_tf.data.segmentations import unpack


def _sample_full(full, box, size):
    centres = (np.arange(size) + 0.5) / size
    rows = np.clip(np.floor(box[0] + centres * (box[2] - box[0])), 0, full.shape[0] - 1).astype(int)
    cols = np.clip(np.floor(box[1] + centres * (box[3] - box[1])), 0, full.shape[1] - 1).astype(int)
    return full[np.ix_(rows, cols)]


def test_polygons_in_the_box_frame_agree_with_the_full_image_mask(coco128):
    json_path, images = coco128
    ds = coco.load_coco(json_path, images)
    agree, total = 0, 0
    for rec in ds.records[:25]:
        got = instance_masks.rasterize_instances(rec.segmentations, rec.boxes, rec.height,
                                                 rec.width, 64)
        for i, seg in enumerate(rec.segmentations):
            full = instance_masks.segmentation_to_mask(unpack(seg), rec.height, rec.width)
            want = _sample_full(full, rec.boxes[i], 64)
            agree += int((got[i] == want).sum())
            total += want.size
            assert got[i].sum() > 0
    # Two rasterisations of one polygon on different grids differ only along the outline.
    assert agree / total > 0.97, agree / total


def test_rle_in_the_box_frame_is_exact_nearest_sampling():
    from pycocotools import mask as mask_utils
    full = np.zeros((30, 40), np.uint8)
    full[5:20, 8:30] = 1
    full[10:12, 10:25] = 0
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode()
    box = np.array([5.0, 8.0, 20.0, 30.0], np.float32)
    got = instance_masks.box_frame_mask(rle, box, 30, 40, 16)
    np.testing.assert_array_equal(got, _sample_full(full, box, 16))
    # Uncompressed RLE (list counts) decodes the same.
    counts = []
    flat = full.flatten(order="F")
    value, run = 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    got2 = instance_masks.box_frame_mask({"size": [30, 40], "counts": counts}, box, 30, 40, 16)
    np.testing.assert_array_equal(got2, got)


def _write_bad_dataset(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "segmentation": square},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5],
         "segmentation": [[1, 1, 5, 5]]},  # 2 points
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, 1, 8, 8],
         "segmentation": [[1, 1, 5, 5, 9, 9]]},  # collinear: zero area
        {"id": 4, "image_id": 7, "category_id": 3, "bbox": [2, 2, 6, 6],
         "segmentation": {"size": [41, 50], "counts": [2050]}},  # RLE of another size
    ]
    data = {"images": [{"id": 7, "file_name": "a.png", "height": 40, "width": 50}],
            "annotations": anns, "categories": [{"id": 3, "name": "thing"}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_bad_segmentations_are_skipped_with_a_warning_and_boxes_kept(tmp_path, caplog):
    path = _write_bad_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = coco.load_coco(path, str(tmp_path))
    rec = ds.records[0]
    assert len(rec.boxes) == 4  # every box kept for detection
    assert [s is not None for s in rec.segmentations] == [True, False, False, False]
    assert ds.skipped_masks == {"polygon with fewer than 3 points": 1,
                                "polygon with zero area": 1,
                                "RLE size [41, 50] differs from the image size [40, 50]": 1}
    text = caplog.text
    for ann_id in (2, 3, 4):
        assert f"annotation {ann_id} of image 7" in text
    assert "3 annotations have no usable mask" in text
    # Through the pipeline: unusable masks are all-zero and flagged invalid (never trained on).
    batch = next(iter(pipeline.build_dataset(ds, pipeline.InputSpec(1, (64, 64), 40, 64, 5, training=False, mask_size=16))))
    labels = batch[1]
    assert labels["gt_masks"].shape == (1, 5, 16, 16)
    assert labels["gt_mask_valid"].numpy()[0].tolist() == [True, False, False, False, False]
    np.testing.assert_array_equal(labels["gt_masks"].numpy()[0, 0], np.ones((16, 16)))
    assert labels["gt_masks"].numpy()[0, 1:].sum() == 0


def test_boxes_only_dataset_with_mask_head_is_a_clear_error(tmp_path):
    path = _write_bad_dataset(tmp_path)
    data = json.loads(open(path).read())
    for a in data["annotations"]:
        a.pop("segmentation")
    open(path, "w").write(json.dumps(data))
    ds = coco.load_coco(path, str(tmp_path))
    with pytest.raises(coco.DatasetError, match="mask_head.enabled=false"):
        pipeline.build_dataset(ds, pipeline.InputSpec(1, (64, 64), 40, 64, 5, training=False, mask_size=16))


def test_flip_mirrors_masks_with_their_boxes(tiny_shapes):
    ds = coco.load_coco(tiny_shapes["train_json"], tiny_shapes["train_images"])
    plain = pipeline.build_dataset(ds, pipeline.InputSpec(1, (128, 128), 128, 128, 8, training=False, mask_size=24))
    plain = {int(f["image_id"][0]): (l["gt_boxes"].numpy()[0], l["gt_masks"].numpy()[0])
             for f, l in plain.take(len(ds.records))}
    flipped_seen = 0
    for f, l in pipeline.build_dataset(ds, pipeline.InputSpec(1, (128, 128), 128, 128, 8, training=True, mask_size=24)).take(12):
        boxes, masks = plain[int(f["image_id"][0])]
        got_boxes, got_masks = l["gt_boxes"].numpy()[0], l["gt_masks"].numpy()[0]
        if np.allclose(got_boxes, boxes):
            np.testing.assert_array_equal(got_masks, masks)
        else:
            flipped_seen += 1
            n = int(l["gt_valid"].numpy()[0].sum())
            np.testing.assert_allclose(got_boxes[:n, 1], 128 - boxes[:n, 3], atol=1e-4)
            np.testing.assert_array_equal(got_masks[:n], masks[:n, :, ::-1])
    assert flipped_seen > 0
