"""Seeded fuzzing of the COCO reader: hundreds of mutations of a valid file (types, missing
keys, nesting, encodings, truncation) each end in a ``DatasetError`` naming the file, or
load with every problem skipped and counted, and then go through what training and
evaluation do on the host (tensors, masks, summary, COCOeval) without an exception."""

import copy
import json
import random

import pytest
from pycocotools import mask as mask_utils

from retinamask_tf.data import coco, coco_tensors, instance_masks, segmentations
from retinamask_tf.evaluation import coco_evaluator

NUM_MUTATIONS = 400
ODD_VALUES = [None, True, False, 0, -1, 1, 2.5, -3.5, 1e308, 10 ** 400, 2 ** 31, 2 ** 63,
              float("nan"),
              float("inf"), "", "1", "x", "\udcff.jpg", "é.jpg", [], [1], [1, 2, 3, 4],
              [[1, 2, 3]], [["a", "b", "c", "d", "e", "f"]], {}, {"a": 1},
              {"size": [40, 50], "counts": "0000"}, {"size": [40, 50], "counts": [1, 2]},
              {"size": ["40", 50], "counts": []}, {"counts": "zz"}, [[0, 0, 10, 0, 10, True]],
              [[0, 0, 10, 0, 10, 10 ** 400]]]


def _valid():
    return {
        "info": {"description": "fuzz"},
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 50},
                   {"id": 2, "file_name": "b.png", "height": 30, "width": 30},
                   {"id": 3, "file_name": "c.jpg", "height": 64, "width": 48}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 15], "area": 300,
             "iscrowd": 0, "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100,
             "iscrowd": 0, "segmentation": {"size": [40, 50], "counts": [0, 10, 1990]}},
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 1, 28, 28], "area": 784,
             "iscrowd": 1, "segmentation": {"size": [30, 30], "counts": "o0l02" + "0" * 53 + "m0"}},
            {"id": 13, "image_id": 3, "category_id": 1, "bbox": [10, 10, 30, 40],
             "area": 1200, "iscrowd": 0,
             "segmentation": [[10, 10, 40, 10, 40, 50], [12, 12, 14, 12, 14, 14]]}],
        "categories": [{"id": 1, "name": "cat", "supercategory": "animal"},
                       {"id": 2, "name": "dog"}]}


def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _mutate(rng):
    """(bytes of a mutated file, what was done)."""
    data = _valid()
    kind = rng.choice(["replace", "replace", "replace", "delete", "wrap", "nest", "duplicate",
                       "truncate", "encoding", "insert_bytes"])
    paths = [p for p, _ in _paths(data) if p]
    path = rng.choice(paths)
    if kind == "replace":
        _set(data, path, copy.deepcopy(rng.choice(ODD_VALUES)))
    elif kind == "delete":
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    elif kind == "wrap":
        node = data
        for key in path:
            node = node[key]
        _set(data, path, [node] if rng.random() < 0.5 else {"value": node})
    elif kind == "nest":
        deep = 0
        for _ in range(rng.choice([3, 50, 900])):
            deep = [deep]
        _set(data, path, deep)
    elif kind == "duplicate":
        section = rng.choice(["images", "annotations", "categories"])
        data[section].append(copy.deepcopy(rng.choice(data[section])))
    text = json.dumps(data, allow_nan=True)
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "truncate":
        raw = raw[:rng.randrange(len(raw))]
    elif kind == "encoding":
        raw = text.encode(rng.choice(["utf-16", "utf-32", "latin-1"]), "replace")
    elif kind == "insert_bytes":
        at = rng.randrange(len(raw))
        raw = raw[:at] + bytes(rng.choice([b"\xff", b"\xc3", b"\x00", b"\xed\xb3\xbf"])) + raw[at:]
    return raw, f"{kind} at {path}"


def _host_side(ds, json_path):
    """What training and evaluation do with a loaded dataset before TensorFlow."""
    examples = list(coco_tensors.records_to_dataset(ds.records, 4, with_masks=True))
    assert len(examples) == len(ds.records)
    for ex in examples:
        masks = instance_masks.rasterize_instances(ex["segmentations"].numpy(),
                                                   ex["boxes"].numpy(), ex["height"],
                                                   ex["width"], 8, ex["image_id"])
        assert masks.shape == (4, 8, 8)
    assert json_path in ds.summary()
    results = [{"image_id": r.image_id, "category_id": ds.class_ids[int(c)],
                "bbox": [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])],
                "score": 0.9} for r in ds.records for b, c in zip(r.boxes, r.classes)]
    image_ids = [r.image_id for r in ds.records]
    coco_evaluator.coco_metrics(json_path, results, image_ids)
    # segm: each detection's box as its mask.
    sizes = {r.image_id: (r.height, r.width) for r in ds.records}
    segm = []
    for res in results:
        x, y, w, h = res["bbox"]
        rle = mask_utils.merge(mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]],
                                                      *sizes[res["image_id"]]))
        segm.append(dict(res, segmentation={"size": rle["size"],
                                            "counts": rle["counts"].decode("ascii")}))
    coco_evaluator.coco_metrics(json_path, segm, image_ids, "segm")


def test_fuzzed_annotation_files_fail_by_name_or_load(tmp_path):
    rng = random.Random(1234)
    outcomes = {"loaded": 0, "rejected": 0}
    for n in range(NUM_MUTATIONS):
        raw, what = _mutate(rng)
        path = tmp_path / f"fuzz_{n}.json"
        path.write_bytes(raw)
        try:
            ds = coco.load_coco(str(path), str(tmp_path))
        except coco.DatasetError as e:
            assert str(path) in str(e), (what, str(e))
            outcomes["rejected"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"mutation {n} ({what}) raised {type(e).__name__}: {e}")
        try:
            _host_side(ds, str(path))
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"mutation {n} ({what}) loaded, then {type(e).__name__}: {e}")
        outcomes["loaded"] += 1
    # Both outcomes occur often enough for the test to mean something.
    assert outcomes["loaded"] > 50 and outcomes["rejected"] > 50, outcomes


def test_unchanged_file_loads_with_every_mask(tmp_path):
    # The base of the mutations is itself valid: polygons, an uncompressed and a
    # compressed RLE, all usable.
    data = _valid()
    for ann in data["annotations"]:
        image = next(i for i in data["images"] if i["id"] == ann["image_id"])
        assert not segmentations.segmentation_problem(ann["segmentation"], image["height"],
                                                       image["width"])
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(data))
    ds = coco.load_coco(str(path), str(tmp_path), crowd="ignore")
    assert not ds.skipped and not ds.skipped_masks
    assert sum(len(r.boxes) for r in ds.records) == 4
    _host_side(ds, str(path))
