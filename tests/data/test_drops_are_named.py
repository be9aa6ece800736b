"""Nothing is dropped silently: every image or mask left out is named and counted, and the
counts equal what the input pipeline yields."""

import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from retinamask_tf.data import coco, pipeline
from retinamask_tf.data.runtime_skips import RuntimeSkips

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bad_images")


def _dataset(tmp_path):
    """ok_a/ok_b (24x32), wide (1x3000), tall (3000x1), truncated.jpg and later.jpg (fine
    at the check, overwritten with garbage after it); ok_a's second annotation has an RLE
    of the right size whose compressed counts are garbage."""
    files = {"ok_a.jpg": (24, 32), "ok_b.jpg": (24, 32), "later.jpg": (24, 32)}
    for name in files:
        shutil.copy(os.path.join(FIXTURES, "ok.jpg"), tmp_path / name)
    shutil.copy(os.path.join(FIXTURES, "truncated.jpg"), tmp_path / "truncated.jpg")
    files["truncated.jpg"] = (24, 32)
    rng = np.random.default_rng(0)
    for name, size in (("wide.png", (1, 3000)), ("tall.png", (3000, 1))):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(tmp_path / name)
        files[name] = size
    images, annotations = [], []
    for i, (name, (h, w)) in enumerate(sorted(files.items()), 1):
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        bw, bh = min(w, 8), min(h, 6)
        annotations.append({"id": 10 * i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [0, 0, bw, bh], "area": bw * bh,
                            "segmentation": [[0, 0, bw, 0, bw, bh, 0, bh]]})
    ok_a = next(im["id"] for im in images if im["file_name"] == "ok_a.jpg")
    annotations.append({"id": 999, "image_id": ok_a, "category_id": 1, "iscrowd": 0,
                        "bbox": [10, 10, 8, 6], "area": 48,
                        "segmentation": {"size": [24, 32], "counts": "0000"}})
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "block"}]}))
    return str(path), {im["file_name"]: im["id"] for im in images}


def test_every_drop_is_named_and_counted_and_matches_the_stream(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    json_path, ids = _dataset(tmp_path)
    ds = coco.load_coco(json_path, str(tmp_path))
    # The garbage RLE: named (annotation and image), counted, its box kept.
    assert sum(ds.skipped_masks.values()) == 1
    assert any(f"annotation 999 of image {ids['ok_a.jpg']}" in m for m in caplog.messages)
    # Header mode catches the truncated JPEG at start-up, by its missing end marker.
    ds = pipeline.verify_images(ds, "header", None)
    assert ds.skipped_images == {"unreadable image": 1}
    assert any("truncated.jpg" in m and f"image {ids['truncated.jpg']}" in m
               for m in caplog.messages)
    assert "5 images, 6 annotations used; 1 of 6 images skipped" in ds.summary()
    assert "1 masks unusable" in ds.summary()

    (tmp_path / "later.jpg").write_bytes(b"\xff\xd8 not a JPEG any more")
    caplog.clear()
    skips = RuntimeSkips("train.json")
    data = pipeline.build_dataset(ds, pipeline.InputSpec(2, (64, 64), 48, 64, 4, training=False, mask_size=16), skips=skips)
    seen = [int(i) for f, _ in data for i in f["image_id"].numpy()]
    expected = {ids[n] for n in ("ok_a.jpg", "ok_b.jpg", "wide.png", "tall.png")}
    assert sorted(seen) == sorted(expected)  # the extreme-aspect images are used
    assert len(seen) == len(ds.records) - len(skips.images)
    assert list(skips.images) == [ids["later.jpg"]] and skips.count == 1
    path, reason = skips.images[ids["later.jpg"]]
    assert path.endswith("later.jpg") and "unreadable image" in reason
    assert any("later.jpg" in m and f"image {ids['later.jpg']}" in m for m in caplog.messages)
    assert "1 images could not be decoded while streaming" in skips.summary()
    # ok_a has 2 annotations: with max_instances=1 one is left out, named and counted.
    skips = RuntimeSkips()
    list(pipeline.build_dataset(ds, pipeline.InputSpec(2, (64, 64), 48, 64, 1, training=False), skips=skips))
    assert [(i, os.path.basename(p), n) for i, p, n in skips.truncated] == [
        (ids["ok_a.jpg"], "ok_a.jpg", 2)]
    assert skips.truncation_summary(1).startswith("1 annotations of 1 images left out by "
                                                  "data.max_instances=1")

    # Training (shuffled, repeated, flipped) never yields it either, and counts each epoch.
    skips = RuntimeSkips()
    data = pipeline.build_dataset(ds, pipeline.InputSpec(1, (64, 64), 48, 64, 4, training=True, mask_size=16, shuffle_buffer=8), skips=skips)
    seen = [int(f["image_id"].numpy()[0]) for f, _ in data.take(12)]
    # 12 images = 3 epochs of 4 (read-ahead may have met it once more).
    assert set(seen) == expected and skips.count >= 3


def test_evaluation_scores_what_it_saw_and_names_the_rest(tmp_path):
    from retinamask_tf import config as C
    from retinamask_tf.evaluation import coco_evaluator as ev
    from retinamask_tf.modeling import factory

    json_path, ids = _dataset(tmp_path)
    ds = pipeline.verify_images(coco.load_coco(json_path, str(tmp_path)), "full", None)
    (tmp_path / "later.jpg").write_bytes(b"garbage")
    cfg = C.load_config([], ["data.short_side=128", "data.long_side=128",
                             "model.backbone.depth=18", "model.backbone.width=8",
                             "model.fpn.channels=16", "model.head.channels=16",
                             "model.head.num_convs=1", "model.mask_head.channels=8",
                             "model.mask_head.num_convs=1", "postprocess.score_threshold=0.0",
                             "eval.batch_size=2"])
    model = factory.build_model(cfg, ds.num_classes)
    report = ev.evaluate(model, ds, cfg, out_dir=str(tmp_path / "eval"), step=1, progress=False)
    # The 1x3000 and 3000x1 images are scored (boxes and masks); the broken one is named.
    assert report["num_images"] == 4
    dets = json.load(open(tmp_path / "eval" / "detections_1.json"))
    assert {d["image_id"] for d in dets} == {ids[n] for n in ("ok_a.jpg", "ok_b.jpg", "wide.png",
                                                            "tall.png")}
    assert list(report["dropped_images"]) == [ids["later.jpg"]]
    assert report["dropped_images"][ids["later.jpg"]][0].endswith("later.jpg")
    segm = json.load(open(tmp_path / "eval" / "segmentations_1.json"))
    sizes = {s["image_id"]: s["segmentation"]["size"] for s in segm}
    assert sizes[ids["wide.png"]] == [1, 3000] and sizes[ids["tall.png"]] == [3000, 1]


def test_a_file_name_that_is_not_utf8_is_read(tmp_path, caplog):
    """A Latin-1 file name (byte 0xE9) reaches Python as a surrogate escape from the JSON
    ("\\udce9"): the file opens by its bytes, start-up check and pipeline alike."""
    name = os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(os.path.join(FIXTURES, "ok.jpg"), os.path.join(os.fsencode(str(tmp_path)),
                                                                 b"caf\xe9.jpg"))
    data = {"images": [{"id": 1, "file_name": name, "height": 24, "width": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 8, 6],
                             "area": 48, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "block"}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))  # ensure_ascii: written as the escape "\udce9"
    ds = pipeline.verify_images(coco.load_coco(str(path), str(tmp_path)), "full", None)
    assert len(ds.records) == 1 and not ds.skipped_images
    features, _ = next(iter(pipeline.build_dataset(ds, pipeline.InputSpec(1, (32, 32), 24, 32, 2, training=False))))
    assert features["images"].numpy().max() > 0


def test_training_stops_by_name_when_no_image_decodes(tiny_shapes, tmp_path):
    """With the start-up check off and the image folder wrong, every image fails in the
    stream: training ends with a DatasetError naming them, instead of filtering forever."""
    import pytest

    from retinamask_tf.data.errors import DatasetError
    from retinamask_tf.training.trainer import Trainer
    from tests.conftest import tiny_config

    empty = tmp_path / "no_images"
    empty.mkdir()
    cfg = tiny_config(tiny_shapes, {"data.verify_images": "off", "data.train_images": str(empty),
                                    "train.steps": 3})
    trainer = Trainer(cfg, str(tmp_path / "run"))
    with pytest.raises(DatasetError, match=r"train\.json: none of the 48 training images could "
                                           r"be decoded: 48 images could not be decoded"):
        trainer.train(progress=False)
