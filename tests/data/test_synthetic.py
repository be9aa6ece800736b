import json
import os

import numpy as np

from retinamask_tf.data import coco, instance_masks, synthetic


def test_deterministic_and_readable(tiny_shapes, tmp_path):
    again = synthetic.ensure_dataset(str(tmp_path), num_train=48, num_val=12, image_size=128,
                                     max_objects=6, min_object_size=12.0, seed=3, progress=False)
    for key in ("train_json", "val_json"):
        assert open(tiny_shapes[key], "rb").read() == open(again[key], "rb").read()
    a = os.path.join(tiny_shapes["train_images"], "train_000005.jpg")
    b = os.path.join(again["train_images"], "train_000005.jpg")
    assert open(a, "rb").read() == open(b, "rb").read()
    ds = coco.load_coco(tiny_shapes["train_json"], tiny_shapes["train_images"])
    assert ds.class_names == list(synthetic.CLASS_NAMES) and len(ds.records) == 48


def test_annotations_describe_the_pixels(tiny_shapes):
    """Masks decoded from the JSON are the visible objects: bbox = mask extent, area = sum."""
    data = json.load(open(tiny_shapes["train_json"]))
    kinds = set()
    for ann in data["annotations"]:
        mask = instance_masks.segmentation_to_mask(ann["segmentation"], 128, 128)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (x, y, w, h)
        assert abs(mask.sum() - ann["area"]) <= 0.02 * ann["area"] + 2
        kinds.add(type(ann["segmentation"]).__name__)
    assert kinds == {"list", "dict"}  # polygons and, for occluded objects, RLE


def test_statistics_of_a_larger_sample():
    """Sizes, aspect ratios, counts and occlusion cover what the issue asks for."""
    sizes, aspects, counts, hidden, classes = [], [], [], [], set()
    for i in range(60):
        rng = np.random.default_rng([0, 0, i, 1])
        img, objects = synthetic.generate_image(rng, 256, 15, 12.0)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        counts.append(len(objects))
        for o in objects:
            y0, y1, x0, x1 = o["box"]
            sizes.append(np.sqrt((y1 - y0) * (x1 - x0)))
            aspects.append(max(y1 - y0, x1 - x0) / min(y1 - y0, x1 - x0))
            hidden.append(1 - o["visible_area"] / o["full_area"])
            classes.add(o["class_index"])
            assert o["visible_area"] >= 0.5 * o["full_area"] - 1
    assert min(sizes) < 16 and max(sizes) > 128
    assert max(aspects) >= 5.0
    assert max(counts) >= 12 and min(counts) >= 1
    assert max(hidden) > 0.2
    assert classes == set(range(len(synthetic.CLASS_NAMES)))
