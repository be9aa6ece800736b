"""Mixed precision: the model computes in 16 bits with float32 weights, the head outputs,
losses and beta statistics stay float32, a few steps give finite losses, and the checkpoint
exports as a float32 model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf import config as C
from retinamask_tf.training.trainer import Trainer


def _config(shapes, precision):
    overrides = {
        "data.kind": "coco", "data.train_json": shapes["train_json"],
        "data.train_images": shapes["train_images"], "data.val_json": shapes["val_json"],
        "data.val_images": shapes["val_images"], "data.short_side": 128, "data.long_side": 128,
        "data.max_instances": 8, "model.backbone.depth": 18, "model.backbone.width": 16,
        "model.backbone.norm": "batch_norm", "model.fpn.channels": 16, "model.head.channels": 16,
        "model.head.num_convs": 1, "model.mask_head.channels": 8, "model.mask_head.num_convs": 1,
        "model.mask_head.gt_mask_size": 32, "train.batch_size": 2, "train.steps": 3,
        "train.warmup_steps": 1, "train.lr_drop_steps": [], "train.clip_grad_norm": 10.0,
        "train.checkpoint_every": 3, "train.precision": precision}
    return C.load_config([], [f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("precision,compute", [("mixed_float16", "float16"),
                                               ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_trains_and_exports(tiny_shapes, tmp_path, precision, compute):
    from retinamask_tf.export import saved_model

    trainer = Trainer(_config(tiny_shapes, precision), str(tmp_path))
    model = trainer.model
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convs} == {compute, "float32"}
    assert all(v.dtype == "float32" for v in model.weights)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (
        precision == "mixed_float16")
    # The global policy is back to float32 for whatever the process builds next.
    assert keras.config.dtype_policy().name == "float32"
    features, labels = next(iter(trainer.dataset))
    outputs = model.head(model.features(features["images"], training=False))
    assert outputs["cls_logits"].dtype == tf.float32 and outputs["box_deltas"].dtype == tf.float32
    result = trainer.train(progress=False)
    assert trainer.step == 3
    for key in ("total_loss", "cls_loss", "box_loss", "mask_loss"):
        assert np.isfinite(result[key]), (key, result)
    layer = model.box_loss_layer
    assert layer.running_mean.dtype == "float32" and np.isfinite(layer.running_var.numpy()).all()
    path = saved_model.export_saved_model(str(tmp_path), str(tmp_path / "export"))
    serving = tf.saved_model.load(path).signatures["serving_default"]
    out = serving(images=tf.zeros([1, 96, 128, 3], tf.uint8))
    assert out["detection_boxes"].dtype == tf.float32
    assert np.isfinite(out["detection_scores"].numpy()).all()
