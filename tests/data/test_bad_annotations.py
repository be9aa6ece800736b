"""Every bad-annotation case of issue 5, each with its decided outcome: converted (clipped),
skipped with a warning naming the annotation and image and counted, or rejected at
start-up with a message naming what is wrong. Fixtures: small edits of one valid JSON."""

import json
import logging

import numpy as np
import pytest

from retinamask_tf.data import coco


def _base():
    return {"images": [{"id": 7, "file_name": "a.jpg", "height": 50, "width": 60},
                       {"id": 8, "file_name": "b.jpg", "height": 40, "width": 40}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 30],
                             "iscrowd": 0, "area": 600,
                             "segmentation": [[10, 5, 30, 5, 30, 35]]}],
            "categories": [{"id": 3, "name": "thing"}, {"id": 5, "name": "other"}]}


def _load(tmp_path, data):
    path = tmp_path / "ann.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return coco.load_coco(str(path), str(tmp_path))


def _with_ann(**fields):
    data = _base()
    data["annotations"].append({"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 0,
                                "segmentation": [], **fields})
    return data


SKIPPED = [  # (case, bbox, reason counted)
    ("zero width", [10, 5, 0, 30], "empty box (zero size or outside the image)"),
    ("negative height", [10, 5, 20, -3], "empty box (zero size or outside the image)"),
    ("wholly outside the image", [70, 5, 20, 30], "empty box (zero size or outside the image)"),
    ("NaN coordinate", [10, float("nan"), 20, 30], "non-finite box"),
    ("null coordinate", [10, None, 20, 30], "non-finite box"),
    ("infinite size", [10, 5, float("inf"), 30], "non-finite box"),
    ("integer beyond float range", [10, 5, 10 ** 400, 30], "non-finite box"),
]


@pytest.mark.parametrize("case,bbox,reason", SKIPPED, ids=[c[0] for c in SKIPPED])
def test_skipped_with_a_warning_and_counted(tmp_path, caplog, case, bbox, reason):
    with caplog.at_level(logging.WARNING):
        ds = _load(tmp_path, _with_ann(bbox=bbox))
    assert list(ds.records[0].ann_ids) == [1]  # the good annotation stays
    assert ds.skipped == {reason: 1}
    assert "annotation 2 of image 7" in caplog.text
    assert "1 annotations skipped" in ds.summary()


def test_partly_outside_is_clipped(tmp_path):
    ds = _load(tmp_path, _with_ann(bbox=[50, -5, 20, 30]))
    np.testing.assert_allclose(ds.records[0].boxes[1], [0, 50, 25, 60])  # yxyx in a 50x60 image
    assert ds.skipped == {}


def test_images_without_annotations_are_kept_as_background(tmp_path):
    ds = _load(tmp_path, _base())
    assert [r.image_id for r in ds.records] == [7, 8]
    assert len(ds.records[1].boxes) == 0


def _edit(fn):
    data = _base()
    fn(data)
    return data


REJECTED = [  # (case, data, words of the message)
    ("category id absent from categories",
     _edit(lambda d: d["annotations"][0].update(category_id=99)),
     r"annotation 1 \(image 7\) has category id 99, which is not in 'categories'"),
    ("duplicate image id", _edit(lambda d: d["images"].append(dict(d["images"][0]))),
     "duplicate image id 7"),
    ("duplicate annotation id",
     _edit(lambda d: d["annotations"].append(dict(d["annotations"][0]))),
     "duplicate annotation id 1"),
    ("annotation of an unknown image", _edit(lambda d: d["annotations"][0].update(image_id=9)),
     "annotation 1 refers to image id 9"),
    ("empty dataset", _edit(lambda d: d.update(images=[], annotations=[])), "has no images"),
    ("no categories", _edit(lambda d: d.update(categories=[])), "has no categories"),
    ("annotation without bbox", _edit(lambda d: d["annotations"][0].pop("bbox")),
     r"annotation entry 0 \(id 1\) lacks 'bbox'"),
    ("bbox of 3 numbers", _edit(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
     r"annotation 1 \(image 7\) has bbox \[1, 2, 3\]"),
    ("bbox of strings", _edit(lambda d: d["annotations"][0].update(bbox=["1", "2", "3", "4"])),
     "expected \\[x, y, width, height\\]"),
    ("image without height", _edit(lambda d: d["images"][1].pop("height")),
     r"image entry 1 \(id 8\) lacks 'height'"),
    ("image of zero width", _edit(lambda d: d["images"][1].update(width=0)),
     r"image 8 \(b.jpg\) has height 40 and width 0"),
    ("images not a list", _edit(lambda d: d.update(images={"7": {}})), "'images' must be a list"),
    ("not COCO at all", {"type": "FeatureCollection", "features": []},
     "not a COCO instances file"),
    ("not JSON", "images: [1, 2", "is not valid JSON"),
    ("not UTF-8", b'{"images": [{"file_name": "\xff\xfe.jpg"}]}', r"is not UTF-8 text \(byte 0xff"),
    ("nested too deeply", "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("categories not a list", _edit(lambda d: d.update(categories={"3": "thing"})),
     "'categories' must be a list"),
    ("category id a string", _edit(lambda d: d["categories"][0].update(id="3")),
     r"category entry 0 has id '3' \(str\); category ids must be 32-bit integers"),
    ("category id beyond 32 bits", _edit(lambda d: d["categories"][0].update(id=2 ** 31)),
     r"category entry 0 has id 2147483648 \(int\); category ids must be 32-bit integers"),
    ("image id beyond 64 bits", _edit(lambda d: d["images"][0].update(id=2 ** 70)),
     r"image entry 0 has id 1180591620717411303424 \(int\); image ids must be 64-bit"),
    ("category without id", _edit(lambda d: d["categories"][1].pop("id")),
     r"category entry 1 \(id None\) lacks 'id'"),
    ("category not an object", _edit(lambda d: d["categories"].append("dog")),
     "category entry 2 is not an object: 'dog'"),
    ("image id a list", _edit(lambda d: d["images"][0].update(id=[7])),
     r"image entry 0 has id \[7\] \(list\); image ids must be 64-bit integers"),
    ("file_name not a string", _edit(lambda d: d["images"][0].update(file_name=17)),
     r"image entry 0 \(id 7\) has file_name 17; expected a non-empty string"),
    ("annotation id a list", _edit(lambda d: d["annotations"][0].update(id=[1])),
     r"annotation entry 0 has id \[1\] \(list\); it must be a 64-bit integer"),
    ("category_id a string", _edit(lambda d: d["annotations"][0].update(category_id="3")),
     r"annotation entry 0 has category_id '3' \(str\)"),
    ("iscrowd not 0/1", _edit(lambda d: d["annotations"][0].update(iscrowd="yes")),
     r"annotation 1 \(image 7\) has iscrowd 'yes'; expected 0 or 1"),
    ("area a string", _edit(lambda d: d["annotations"][0].update(area="600")),
     r"annotation 1 \(image 7\) has area '600'; expected a number"),
    ("bbox of booleans", _edit(lambda d: d["annotations"][0].update(bbox=[True, 1, 2, 3])),
     "expected \\[x, y, width, height\\]"),
]


def test_val_category_missing_from_train_names_the_training_split(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_base()))
    with pytest.raises(coco.DatasetError, match="category id 3, which is not in the training "
                                                "split's categories"):
        coco.load_coco(str(path), str(tmp_path), categories=[{"id": 5, "name": "other"}])


@pytest.mark.parametrize("case,data,words", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_at_start_up_with_a_clear_message(tmp_path, case, data, words):
    with pytest.raises(coco.DatasetError, match=words) as err:
        _load(tmp_path, data)
    assert "ann.json" in str(err.value)  # names the file
