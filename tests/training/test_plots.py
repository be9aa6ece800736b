"""Training plots read back what the trainer logged: the scalars equal the model's state
and the returned losses, and the Figure-3 and loss PNGs are written."""

import numpy as np
from PIL import Image

from retinamask_tf import config as C
from retinamask_tf import plots
from retinamask_tf.training.trainer import Trainer


def test_plots_read_the_logged_state(tiny_shapes, tmp_path):
    overrides = {
        "data.kind": "coco", "data.train_json": tiny_shapes["train_json"],
        "data.train_images": tiny_shapes["train_images"], "data.val_json": tiny_shapes["val_json"],
        "data.val_images": tiny_shapes["val_images"], "data.short_side": 128,
        "data.long_side": 128, "data.max_instances": 8, "model.backbone.depth": 18,
        "model.backbone.width": 16, "model.backbone.norm": "batch_norm", "model.fpn.channels": 16,
        "model.head.channels": 16, "model.head.num_convs": 1, "model.mask_head.channels": 8,
        "model.mask_head.num_convs": 1, "model.mask_head.gt_mask_size": 32,
        "train.batch_size": 2, "train.steps": 3, "train.warmup_steps": 1,
        "train.lr_drop_steps": [], "train.summary_every": 1, "train.checkpoint_every": 3}
    trainer = Trainer(C.load_config([], [f"{k}={v}" for k, v in overrides.items()]), str(tmp_path))
    result = trainer.train(progress=False)
    scalars = plots.read_scalars(str(tmp_path / "train"))
    layer = trainer.model.box_loss_layer
    for i, name in enumerate(plots.COORDS):
        steps, values = scalars[f"running_mean/{name}"]
        np.testing.assert_array_equal(steps, [1, 2, 3])
        np.testing.assert_allclose(values[-1], layer.running_mean.numpy()[i], rtol=1e-6)
        np.testing.assert_allclose(scalars[f"beta/{name}"][1][-1], result["beta"][i], rtol=1e-6)
    for tag in plots.LOSSES:
        np.testing.assert_allclose(scalars[tag][1][-1], result[tag], rtol=1e-6)
    assert len(set(scalars["total_loss"][1])) == 3  # three different steps, not one repeated
    paths = plots.write_training_plots(str(tmp_path), beta_hat=0.11)
    assert Image.open(paths["beta"]).size == (1100, 400)
    assert Image.open(paths["losses"]).size == (700, 400)
