"""``retinamask_tf.load``: one call and one result type for a run directory, a SavedModel
and a .tflite file; the class-count and override checks at load."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import yaml

import retinamask_tf as rm
from retinamask_tf import config as C
from retinamask_tf import run_dir
from retinamask_tf.detections import Detections
from retinamask_tf.export import saved_model
from retinamask_tf.image_io import read_rgb
from retinamask_tf.ops.resize import resize_and_pad
from tests.export.matching import matched


@pytest.fixture(scope="module")
def three_formats(trained_dir, mask_tflite, tmp_path_factory):
    """The fixture run, its SavedModels (TF Serving layout, with and without masks) and its
    TFLite files (with and without masks), masks exported at threshold 0.3."""
    model_dir, _ = trained_dir
    root = tmp_path_factory.mktemp("formats")
    base = str(root / "saved_model")
    saved_model.export_servable(model_dir, base)
    masks_base = str(root / "saved_model_masks")
    saved_model.export_servable(model_dir, masks_base, include_masks=True,
                                overrides=["model.mask_head.mask_threshold=0.3"])
    return model_dir, base, masks_base, mask_tflite


def _image(coco128):
    return read_rgb(sorted(glob.glob(os.path.join(coco128[1], "*.jpg")))[0])


def test_checkpoint_predictor_is_the_restored_model(trained_dir, coco128):
    """Boxes and scores are the restored model's on the same resize, mapped to the image's
    own pixels, with the label map's ids and names; masks at image size."""
    model_dir, _ = trained_dir
    predictor = rm.load(model_dir)
    restored = rm.restore(model_dir)
    image = _image(coco128)
    det = predictor(image)
    c = restored.config
    padded, info = resize_and_pad(tf.cast(image, tf.float32), c.data.short_side,
                                  c.data.long_side, c.image_size)
    want = restored.model.detect(padded[None], info[None])
    n = int(want["num_detections"][0])
    assert isinstance(det, Detections) and n == len(det) > 0
    np.testing.assert_allclose(det.boxes, want["boxes"][0, :n].numpy(), atol=1e-4)
    np.testing.assert_allclose(det.scores, want["scores"][0, :n].numpy(), atol=1e-6)
    classes = want["classes"][0, :n].numpy()
    assert list(det.classes) == [restored.class_ids[k] for k in classes]
    assert det.names == tuple(restored.class_names[k] for k in classes)
    k = min(n, c.model.mask_head.num_masks)
    assert det.masks.shape == (k,) + image.shape[:2] and det.masks.dtype == bool
    assert (det.boxes[:, 2] <= image.shape[0] + 1e-3).all()
    boxes_only = rm.load(model_dir, include_masks=False)(image)
    assert boxes_only.masks is None
    np.testing.assert_allclose(boxes_only.boxes, det.boxes, atol=1e-4)


def test_one_contract_across_the_three_formats(three_formats, coco128):
    """The same image through the run directory, the SavedModel (its TF Serving base
    folder and its version folder) and the TFLite file: the same fields, dtypes and frame,
    the same names for the same ids, and the same detections (boxes within 1 px, scores
    within 1e-4; the top 20 of each matched by class and box, near-tied swaps paired)."""
    model_dir, base, masks_base, lite = three_formats
    image = _image(coco128)
    dets = {"run": rm.load(model_dir, include_masks=False)(image),
            "saved_model": rm.load(base)(image),
            "version folder": rm.load(saved_model.resolve_servable(base))(image),
            "tflite": rm.load(lite["float32"])(image)}
    ids, names = run_dir.read_label_map(model_dir)
    by_id = dict(zip(ids, names))
    for fmt, det in dets.items():
        assert isinstance(det, Detections), fmt
        assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4), fmt
        assert det.scores.dtype == np.float32 and det.classes.dtype == np.int64, fmt
        assert isinstance(det.names, tuple) and all(isinstance(n, str) for n in det.names), fmt
        assert [by_id[int(c)] for c in det.classes] == list(det.names), fmt
        assert det.masks is None, fmt
        assert (np.diff(det.scores) <= 0).all(), fmt
        assert (det.boxes >= 0).all() and (det.boxes[:, 2] <= image.shape[0]).all(), fmt
        assert (det.boxes[:, 3] <= image.shape[1]).all(), fmt
        assert len(det) == 100, fmt  # the fixture's score threshold is 0
    for fmt in ("saved_model", "version folder", "tflite"):
        err = matched(dets["run"], dets[fmt], 20)
        assert err[0] <= 1.0 and err[1] <= 1e-4, (fmt, err)
    # Masks: the run directory, the mask SavedModel and the mask TFLite file (both exported
    # with another mask threshold, which they keep) paste the same full-image masks: each
    # of the run's first 10 against the same-class detection of the closest box.
    assert rm.load(masks_base).mask_threshold == pytest.approx(0.3)
    assert rm.load(lite["float32_masks"]).mask_threshold == pytest.approx(0.3)
    run = rm.load(model_dir, overrides=["model.mask_head.mask_threshold=0.3"])(image)
    num_masks = run_dir.read_config(model_dir).model.mask_head.num_masks
    for fmt, det in (("saved_model", rm.load(masks_base)(image)),
                     ("tflite", rm.load(lite["float32_masks"])(image))):
        assert det.masks.shape == (min(len(det), num_masks),) + image.shape[:2], fmt
        assert det.masks.dtype == bool, fmt
        for i in range(10):
            j = int(np.argmin(np.abs(det.boxes - run.boxes[i]).max(1)
                              + 1e6 * (det.classes != run.classes[i])))
            union = np.logical_or(run.masks[i], det.masks[j]).sum()
            inter = np.logical_and(run.masks[i], det.masks[j]).sum()
            assert union == 0 or inter / union > 0.9, (fmt, i, inter / union)


def test_every_format_refuses_what_is_not_a_uint8_image(three_formats):
    model_dir, base, _, lite = three_formats
    for path in (model_dir, base, lite["float32"], lite["float32_masks"]):
        predictor = rm.load(path, **({"include_masks": False} if path == model_dir else {}))
        with pytest.raises(ValueError, match="uint8"):
            predictor(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(ValueError, match=r"RGB image \[H > 0, W > 0, 3\]"):
            predictor(np.zeros((0, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="RGB image"):
            predictor(np.zeros((2, 8, 8, 3), np.uint8))  # a batch
        gray = predictor(np.full((40, 30), 90, np.uint8))  # grayscale is converted
        assert len(gray) == 100 and (gray.boxes[:, 2] <= 40).all()


def test_load_names_what_is_wrong(three_formats, tmp_path):
    model_dir, base, _, lite = three_formats
    with pytest.raises(run_dir.RunDirError, match="nowhere: no such file or folder"):
        rm.load(str(tmp_path / "nowhere"))
    with pytest.raises(run_dir.RunDirError, match="is an export"):
        rm.load(base, include_masks=True)
    with pytest.raises(run_dir.RunDirError, match="is an export"):
        rm.load(lite["float32"], overrides=["postprocess.score_threshold=0.5"])
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(run_dir.RunDirError, match="not a .tflite or OpenVINO .xml model"):
        rm.load(str(text))
    with pytest.raises(run_dir.RunDirError, match="holds no SavedModel"):
        rm.load(str(tmp_path))


def test_overrides_change_inference_settings_only(three_formats, coco128):
    """An inference setting is applied; a key the weights depend on is refused by name."""
    model_dir = three_formats[0]
    det = rm.load(model_dir, include_masks=False,
                  overrides=["postprocess.score_threshold=0.2",
                             "postprocess.max_detections=7"])(_image(coco128))
    assert len(det) <= 7 and (det.scores > 0.2).all()
    with pytest.raises(C.ConfigError, match=r"'model.backbone.depth' \(18 -> 50\).*cannot "
                                            r"change without training again"):
        rm.load(model_dir, overrides=["model.backbone.depth=50"])
    with pytest.raises(C.ConfigError, match=r"'anchors.anchor_scale'"):
        rm.load(model_dir, overrides=["anchors.anchor_scale=3.0"])


def test_class_counts_that_disagree_are_named_with_both(trained_dir, tmp_path):
    """A config, label map or checkpoint with another class count: both counts named."""
    model_dir, trainer = trained_dir
    n = trainer.train_data.num_classes
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy)
    path = copy / run_dir.CONFIG_FILE
    values = yaml.safe_load(path.read_text())
    values["model"]["num_classes"] = n + 2
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(run_dir.RunDirError, match=rf"label_map.json has {n} classes but "
                                                  rf"config.yaml has model.num_classes={n + 2}"):
        rm.load(str(copy))
    ids, names = run_dir.read_label_map(model_dir)
    run_dir.write_label_map(str(copy), ids + [901, 902], names + ["x", "y"])
    with pytest.raises(run_dir.RunDirError, match=rf"checkpoint .* has {n} classes but .* "
                                                  rf"model.num_classes={n + 2}"):
        rm.load(str(copy))


def test_a_dataset_and_a_config_that_disagree_are_named(trained_dir):
    """The Python API's training input: a config for another class count is refused by
    name before any step; a model built for fewer classes than its data says so."""
    _, trainer = trained_dir
    train = trainer.train_data
    n = train.num_classes
    config = C.replace(trainer.config, **{"model.num_classes": n - 1})
    with pytest.raises(C.ConfigError, match=rf"'model.num_classes' is {n - 1} but .* has {n} "
                                            "classes"):
        rm.build_dataset(config, train, training=True)
    ok = C.replace(trainer.config, **{"model.num_classes": n})
    batch = next(iter(rm.build_dataset(ok, train, training=True)))
    small = rm.build_model(config)
    small.compile(optimizer="sgd")
    labels = dict(batch[1], gt_classes=tf.fill(tf.shape(batch[1]["gt_classes"]), n - 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"this model's {n - 1} classes"):
        small.train_step_with((batch[0], labels))
