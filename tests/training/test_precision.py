"""Mixed precision: the model computes in 16 bits with float32 weights, the head outputs,
losses and beta statistics stay float32, a few steps give finite losses, and the checkpoint
exports as a float32 model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.training.trainer import Trainer
from tests.conftest import tiny_config


def _config(shapes, precision):
    return tiny_config(shapes, {"train.steps": 3, "train.clip_grad_norm": 10.0,
                                "train.checkpoint_every": 3, "train.precision": precision})


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
    layer = model.box_loss
    assert layer.running_mean.dtype == "float32" and np.isfinite(layer.running_var.numpy()).all()
    path = saved_model.export_saved_model(str(tmp_path), str(tmp_path / "export"))
    serving = tf.saved_model.load(path).signatures["serving_default"]
    out = serving(images=tf.zeros([1, 96, 128, 3], tf.uint8))
    assert out["detection_boxes"].dtype == tf.float32
    assert np.isfinite(out["detection_scores"].numpy()).all()
