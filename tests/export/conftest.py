"""A short training run shared by the export tests (config, label map, checkpoint)."""

import pytest

from retinamask_tf import config as C
from retinamask_tf.training.trainer import Trainer


@pytest.fixture(scope="session")
def trained_dir(tiny_shapes, tmp_path_factory):
    """A training directory with a few steps of training (config, label map, checkpoint).
    (Backbone width 16: at width 8 and a 256x256 input, TF 2.21's oneDNN CPU kernels corrupt
    the heap; TF_ENABLE_ONEDNN_OPTS=0 avoids it. Not our code; noted for an upstream report.)"""
    d = tmp_path_factory.mktemp("run")
    overrides = {
        "data.kind": "coco", "data.train_json": tiny_shapes["train_json"],
        "data.train_images": tiny_shapes["train_images"], "data.val_json": tiny_shapes["val_json"],
        "data.val_images": tiny_shapes["val_images"], "data.short_side": 128,
        "data.long_side": 192, "data.max_instances": 8, "model.backbone.depth": 18,
        "model.backbone.width": 16, "model.backbone.norm": "batch_norm", "model.fpn.channels": 16,
        "model.head.channels": 16, "model.head.num_convs": 1, "model.mask_head.channels": 8,
        "model.mask_head.num_convs": 1, "model.mask_head.gt_mask_size": 32,
        "postprocess.score_threshold": 0.0, "train.batch_size": 2, "train.steps": 4,
        "train.warmup_steps": 1, "train.lr_drop_steps": [], "train.checkpoint_every": 4}
    cfg = C.load_config([], [f"{k}={v}" for k, v in overrides.items()])
    trainer = Trainer(cfg, str(d))
    trainer.train(progress=False)
    return str(d), trainer


@pytest.fixture(scope="session")
def mask_tflite(trained_dir, tmp_path_factory):
    """The fixture run's float32 and int8 TFLite files with and without masks (one export
    for the tests that need them), exported with mask threshold 0.3: {file key: path}."""
    from retinamask_tf.export import tflite
    out = tmp_path_factory.mktemp("mask_tflite")
    return tflite.export_tflite(trained_dir[0], str(out), ("float32", "int8"),
                                num_calibration_images=8, progress=None, include_masks=True,
                                overrides=["model.mask_head.mask_threshold=0.3"])
