"""Packed segmentations: the checks, exact round trips, the same masks as the COCO file's
own polygons, and memory that follows the total annotation text."""

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from retinamask_tf.data import coco, instance_masks, pipeline, segmentations

SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]
# (segmentation, the problem named) for an image of 40 x 50.
CASES = [
    ([SQUARE], None),
    ([SQUARE, [1, 1, 2, 2]], None),  # a 2-point part is left out, the square kept
    ([[0.5, 0.25, 7.125, 3, 2, 9.75]], None),
    ({"size": [40, 50], "counts": [0, 10, 1990]}, None),
    (None, "no segmentation"),
    ([], "empty polygon list"),
    ("abc", "unknown segmentation format str"),
    ([[1, 2, 3, "4", 5, 6]], "polygon that is not a list of numbers"),
    ([[0, 0, 10, 0, 10, True]], "polygon that is not a list of numbers"),
    ([SQUARE, 7], "polygon that is not a list of numbers"),
    ([SQUARE + [1]], "polygon with an odd number of coordinates"),
    ([[0, 0, 10, 0, 10, float("nan")]], "polygon with non-finite coordinates"),
    ([[0, 0, 10, 0, 10, 10 ** 400]], "polygon with non-finite coordinates"),
    ([[0, 0, 10, 0, 10, 2 ** 31]], "polygon far outside the image"),
    ([SQUARE, [0, 0, 10, 0, 10, -1e6]], "polygon far outside the image"),
    ([[1, 1, 5, 5]], "polygon with fewer than 3 points"),
    ([[1, 1, 5, 5, 9, 9]], "polygon with zero area"),
    # The first failing polygon is named.
    ([[0, 0, 1], [0, 0, 10, 0, 10, float("inf")]], "polygon with an odd number of coordinates"),
    ({"size": [41, 50], "counts": [2050]},
     "RLE size [41, 50] differs from the image size [40, 50]"),
    ({"size": [40, 50], "counts": [1, 2]}, "RLE counts sum to 3, not height x width = 2000"),
]


@pytest.mark.parametrize("batch", [1, 3, 20000])
def test_each_problem_is_named_in_any_batch(batch, monkeypatch):
    """The checks run in NumPy batches; where a batch ends changes nothing."""
    monkeypatch.setattr(segmentations, "_BATCH", batch)
    segs = [s for s, _ in CASES]
    packed, problems = segmentations.pack_all(segs, [40] * len(segs), [50] * len(segs))
    assert problems == [p for _, p in CASES]
    assert [p is not None for p in packed] == [p is None for _, p in CASES]
    for seg, problem in CASES:
        assert segmentations.segmentation_problem(seg, 40, 50) == problem


def test_packing_round_trips_the_exact_values():
    from pycocotools import mask as mask_utils
    polygons = [[0.1, 0.2, 10.123456789, 0.3, 5, 7.7], [1, 1, 2, 2], [3, 3, 9, 3, 9, 9, 3, 9]]
    full = np.zeros((40, 50), np.uint8)
    full[5:20, 8:30] = 1
    compressed = {"size": [40, 50],
                  "counts": mask_utils.encode(np.asfortranarray(full))["counts"].decode()}
    listed = {"size": [40, 50], "counts": [0, 2000]}
    packed, problems = segmentations.pack_all([polygons, compressed, listed], [40] * 3, [50] * 3)
    assert problems == [None, None, None]
    got = segmentations.unpack(packed[0])
    assert len(got) == 2  # the 2-point part is left out, as the rasteriser leaves it out
    assert [p.tolist() for p in got] == [polygons[0], polygons[2]]  # bit-exact float64
    assert segmentations.unpack(packed[1]) == compressed
    assert segmentations.unpack(packed[2]) == listed
    # Polygons cost 8 bytes a coordinate and a small header.
    assert len(packed[0]) == 8 + 8 * 2 + 8 * 14
    # What TFRecords written earlier hold: JSON text, "null" for none.
    assert segmentations.unpack(b"null") is None and segmentations.unpack(b"") is None
    assert segmentations.unpack(json.dumps(polygons).encode()) == polygons


def _masks_from_file(json_path, image_dir, size, max_instances):
    """{image_id: [M, S, S]} straight from the COCO file's own segmentation objects (never
    packed), rows as the reader orders them (file order, no crowd, padded)."""
    raw = json.load(open(json_path))
    images = {i["id"]: i for i in raw["images"]}
    anns = {}
    for a in raw["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    ds = coco.load_coco(json_path, image_dir)
    out = {}
    for rec in ds.records:
        by_id = {a["id"]: a for a in anns.get(rec.image_id, [])}
        masks = np.zeros((max_instances, size, size), np.uint8)
        img = images[rec.image_id]
        for row, (ann_id, box) in enumerate(zip(rec.ann_ids, rec.boxes)):
            seg = by_id[int(ann_id)]["segmentation"]
            if not segmentations.segmentation_problem(seg, img["height"], img["width"]):
                masks[row] = instance_masks.box_frame_mask(seg, box, img["height"],
                                                           img["width"], size)
        out[rec.image_id] = masks
    return ds, out


@pytest.mark.parametrize("dataset", ["coco128", "tiny_shapes"])
def test_pipeline_masks_equal_the_files_own_polygons(dataset, request):
    """Every GT mask that reaches the loss equals the one rasterised from the JSON's own
    polygons and RLEs (what the reader did before it packed them)."""
    if dataset == "coco128":
        json_path, image_dir = request.getfixturevalue("coco128")
    else:
        shapes = request.getfixturevalue("tiny_shapes")
        json_path, image_dir = shapes["train_json"], shapes["train_images"]
    size, m = 28, 48
    ds, want = _masks_from_file(json_path, image_dir, size, m)
    spec = pipeline.InputSpec(4, (256, 256), 256, 256, m, training=False, mask_size=size)
    seen, nonzero = 0, 0
    for features, labels in pipeline.build_dataset(ds, spec):
        for image_id, masks, valid in zip(features["image_id"].numpy(),
                                          labels["gt_masks"].numpy(),
                                          labels["gt_mask_valid"].numpy()):
            np.testing.assert_array_equal(masks, want[int(image_id)])
            assert (masks.reshape(m, -1).any(1) <= valid).all()
            seen += 1
            nonzero += int(valid.sum())
    assert seen == len(ds.records) and nonzero > 100


def test_memory_follows_the_total_text_not_the_longest_image(tmp_path):
    """300 images with one small polygon each and one with 1 MB of polygon text: the
    packed store and everything ``read_examples`` allocates stay within a small factor of
    the total text (a fixed-width array, images x the longest image, would be 300 MB)."""
    Image.fromarray(np.zeros((400, 500, 3), np.uint8)).save(tmp_path / "a.jpg")
    rng = np.random.default_rng(0)
    angles = np.sort(rng.random(60000)) * 2 * np.pi
    big = np.round(np.stack([250 + 200 * np.cos(angles), 200 + 180 * np.sin(angles)], 1), 3)
    images, anns = [], []
    for i in range(301):
        images.append({"id": i + 1, "file_name": "a.jpg", "height": 400, "width": 500})
        poly = big.reshape(-1).tolist() if i == 150 else [10, 10, 60, 10, 60, 40, 10, 40]
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "bbox": [10, 10, 50, 30] if i != 150 else [50, 20, 400, 360],
                     "area": 1500, "segmentation": [poly]})
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "thing"}]}))
    text = sum(len(json.dumps(a["segmentation"])) for a in anns)
    assert 1.0e6 < text < 1.2e6
    ds = coco.load_coco(str(path), str(tmp_path))
    stored = sum(len(s) for r in ds.records for s in r.segmentations)
    assert stored < 1.5 * text, (stored, text)
    tracemalloc.start()
    try:
        examples = ds.read_examples(10, with_masks=True)
        for n, ex in enumerate(examples, 1):
            assert ex["mask_valid"].numpy()[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 301
    assert peak < 3 * text, (peak, text)
    large = dataclasses.replace(ds, records=ds.records[150:151])
    spec = pipeline.InputSpec(1, (64, 64), 64, 64, 10, training=False, mask_size=16)
    _, labels = next(iter(pipeline.build_dataset(large, spec)))
    assert labels["gt_masks"].numpy()[0, 0].sum() > 100  # the large polygon reaches the loss


def test_packed_store_and_views():
    store = segmentations.PackedStore()
    store.add([b"ab", None, b"cde"])
    store.add([None, b"f"])
    assert len(store) == 5 and bytes(store.data) == b"abcdef"
    assert [store.get(i) for i in range(5)] == [b"ab", None, b"cde", None, b"f"]
    assert store.has_mask(np.array([4, 3, 0])).tolist() == [True, False, True]
    views = [segmentations.SegmentationView(store, np.array([4, 0])),
             segmentations.SegmentationView(store, np.array([1, 2, 3]))]
    assert views[0] == [b"f", b"ab"] and views[1][1:] == [b"cde", None] and len(views[1]) == 3
    same, index = segmentations.flat_store(views)
    assert same is store and index.tolist() == [4, 0, 1, 2, 3]  # views are not copied
    copied, index = segmentations.flat_store([[b"x", None], views[0]])
    assert [copied.get(i) for i in index] == [b"x", None, b"f", b"ab"]
