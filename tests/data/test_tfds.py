"""TFDS detection builders as an input: the same examples as the COCO JSON they hold, the
val split written as COCO for evaluation, training runs, and the errors users meet."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from retinamask_tf import config as C  # noqa: E402
from retinamask_tf.data import coco, pipeline, tfds_source  # noqa: E402

from . import tfds_builder  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tiny_shapes, tmp_path_factory):
    """(data_dir, builder name, tiny_shapes): the shapes dataset as a prepared TFDS dataset
    with train and validation splits."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    name = tfds_builder.prepare(data_dir, {
        "train": (tiny_shapes["train_json"], tiny_shapes["train_images"]),
        "validation": (tiny_shapes["val_json"], tiny_shapes["val_images"])})
    return data_dir, name, tiny_shapes


def _config(prepared, tmp_path, **extra):
    data_dir, name, _ = prepared
    overrides = {
        "data.kind": "tfds", "data.tfds_name": name, "data.tfds_data_dir": data_dir,
        "data.tfds_val_dir": str(tmp_path / "val"), "data.short_side": 128,
        "data.long_side": 128, "data.max_instances": 8, "model.backbone.depth": 18,
        "model.backbone.width": 16, "model.backbone.norm": "batch_norm",
        "model.fpn.channels": 16, "model.head.channels": 16, "model.head.num_convs": 1,
        "model.mask_head.enabled": False, "train.batch_size": 4, "train.steps": 3,
        "train.warmup_steps": 1, "train.lr_drop_steps": [], "train.checkpoint_every": 3,
        **extra}
    return C.load_config([], [f"{k}={v}" for k, v in overrides.items()])


def _by_image(ds):
    """{image_id: (features, labels) as numpy} of an evaluation-mode dataset."""
    out = {}
    for features, labels in ds.unbatch():
        out[int(features["image_id"])] = (
            {k: v.numpy() for k, v in features.items()}, {k: v.numpy() for k, v in labels.items()})
    return out


def test_tfds_examples_equal_json_examples(prepared):
    """Every image of the TFDS train split parses to what the JSON gives: the same pixels
    and labels; boxes within 1e-3 px (TFDS stores them normalised, as float32)."""
    data_dir, name, shapes = prepared
    ds = coco.load_coco(shapes["train_json"], shapes["train_images"])
    source = tfds_source.load_source(name, "train", data_dir)
    assert source.num_examples == len(ds.records) == 48
    assert source.class_names == ds.class_names and source.class_ids == ds.class_ids
    kwargs = dict(image_size=(128, 128), short_side=96, long_side=128, max_instances=8,
                  training=False)
    a = _by_image(pipeline.build_dataset(ds, pipeline.InputSpec(8, **kwargs)))
    b = _by_image(pipeline.build_dataset(source, pipeline.InputSpec(8, **kwargs)))
    assert sorted(a) == sorted(b)
    for image_id in a:
        (fa, la), (fb, lb) = a[image_id], b[image_id]
        np.testing.assert_array_equal(fa["images"], fb["images"])
        np.testing.assert_array_equal(fa["image_info"], fb["image_info"])
        for key in ("gt_classes", "gt_valid", "gt_crowd"):
            np.testing.assert_array_equal(la[key], lb[key], err_msg=f"{image_id} {key}")
        np.testing.assert_allclose(la["gt_boxes"], lb["gt_boxes"], atol=1e-3)
    # Training batches come out (shuffled, flipped) with the right shapes.
    features, labels = next(iter(pipeline.build_dataset(source, pipeline.InputSpec(4, image_size=(128, 128), short_side=96, long_side=128, max_instances=8, training=True, seed=1))))
    assert features["images"].shape == (4, 128, 128, 3) and labels["gt_boxes"].shape == (4, 8, 4)


def test_tfds_training_and_val_split_written_as_coco(prepared, tmp_path):
    """data.kind=tfds end to end: the val split is written once as COCO JSON + the stored
    image bytes (equal to the original val JSON's boxes), reused on the next start, and
    a few training steps run and save a checkpoint."""
    from retinamask_tf.training.trainer import Trainer

    _, _, shapes = prepared
    cfg = _config(prepared, tmp_path)
    train, val = pipeline.load_splits(cfg.data)
    assert isinstance(train, tfds_source.TFDSSource) and len(val.records) == 12
    assert val.skipped_masks == {} and val.summary().endswith("boxes only (no segmentations)")
    written = json.load(open(val.json_path))
    original = json.load(open(shapes["val_json"]))
    assert {i["id"]: (i["height"], i["width"]) for i in written["images"]} == {
        i["id"]: (i["height"], i["width"]) for i in original["images"]}
    got = sorted((a["image_id"], a["category_id"], *np.round(a["bbox"], 2))
                 for a in written["annotations"])
    want = sorted((a["image_id"], a["category_id"], *np.round(a["bbox"], 2))
                  for a in original["annotations"])
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=0.02)
    name = written["images"][0]["file_name"]
    assert (open(os.path.join(os.path.dirname(val.json_path), "images", name), "rb").read()
            == open(os.path.join(shapes["val_images"], name), "rb").read())
    mtime = os.path.getmtime(val.json_path)
    pipeline.load_splits(cfg.data)
    assert os.path.getmtime(val.json_path) == mtime  # reused, not rewritten

    trainer = Trainer(cfg, str(tmp_path / "run"))
    result = trainer.train(progress=False)
    assert np.isfinite(result["total_loss"]) and trainer.step == 3
    assert trainer.manager.latest_checkpoint


def test_tfds_labels_joined_to_val_json_by_name(prepared, tmp_path):
    """With data.val_json, TFDS labels map to its category ids by name, whatever their
    order; a label with no category of that name is an error naming it."""
    data_dir, name, shapes = prepared
    original = json.load(open(shapes["val_json"]))
    cats = original["categories"]
    renumbered = [{"id": 100 - c["id"], "name": c["name"]} for c in cats]  # reversed ids
    source = tfds_source.load_source(name, "train", data_dir, categories=renumbered)
    assert source.class_ids == sorted(c["id"] for c in renumbered)
    for label, label_name in enumerate(tfds_builder.NAMES):
        index = source.label_to_class[label]
        assert source.class_names[index] == label_name
    with pytest.raises(coco.DatasetError, match=f"'{cats[0]['name']}'"):
        tfds_source.load_source(name, "train", data_dir,
                                categories=[{"id": 1, "name": "something else"}] + cats[1:])
    # Through the config: val from the JSON, train from TFDS with the JSON's ids.
    cfg = _config(prepared, tmp_path, **{"data.val_json": shapes["val_json"],
                                         "data.val_images": shapes["val_images"]})
    train, val = pipeline.load_splits(cfg.data)
    assert train.class_ids == val.class_ids and val.json_path == shapes["val_json"]


def test_tfds_objects_are_cleaned(prepared):
    """What a builder may hold that training must not see: non-finite and empty boxes and
    labels outside the label list are dropped, boxes clipped to [0, 1], crowd objects
    dropped or kept by data.crowd; bbox/label lists of different lengths fail."""
    data_dir, name, _ = prepared
    source = tfds_source.load_source(name, "train", data_dir)
    bbox = tf.constant([[0.1, 0.1, 0.5, 0.5], [np.nan, 0.1, 0.5, 0.5], [0.3, 0.3, 0.3, 0.6],
                        [-0.2, 0.5, 0.4, 1.3], [0.2, 0.2, 0.4, 0.4], [0.1, 0.1, 0.9, 0.9]])
    ex = {"objects": {"bbox": bbox, "label": tf.constant([0, 1, 1, 2, 99, 3], tf.int64),
                      "is_crowd": tf.constant([False, False, False, False, False, True])}}
    boxes, classes, crowd = (t.numpy() for t in tfds_source.object_columns(ex, source))
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.5, 0.5], [0.0, 0.5, 0.4, 1.0]])
    np.testing.assert_array_equal(classes, [0, 2])
    ignore = tfds_source.load_source(name, "train", data_dir, crowd="ignore")
    boxes, classes, crowd = (t.numpy() for t in tfds_source.object_columns(ex, ignore))
    assert len(boxes) == 3 and crowd.tolist() == [False, False, True]
    bad = {"objects": {"bbox": bbox, "label": tf.constant([0, 1], tf.int64)}}
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in length"):
        tfds_source.object_columns(bad, source)


def test_tfds_errors_name_the_problem(prepared, tmp_path):
    data_dir, name, _ = prepared
    with pytest.raises(C.ConfigError, match="model.mask_head.enabled.*boxes only"):
        _config(prepared, tmp_path, **{"model.mask_head.enabled": True})
    with pytest.raises(C.ConfigError, match="data.tfds_name"):
        C.load_config([], ["data.kind=tfds", "model.mask_head.enabled=false"])
    with pytest.raises(coco.DatasetError, match="no split 'nope'.*train"):
        tfds_source.load_source(name, "nope", data_dir)
    with pytest.raises(coco.DatasetError, match="not found"):
        tfds_source.load_source("no_such_dataset_xyz", "train", data_dir)
    with tfds.testing.mock_data(num_examples=2):
        # mnist has no objects; a builder that was never prepared has no splits.
        with pytest.raises(coco.DatasetError, match="not a detection dataset"):
            tfds_source.load_source("mnist", "train")
        with pytest.raises(coco.DatasetError, match="not prepared.*tfds build coco/2017"):
            tfds_source.load_source("coco/2017", "train")
