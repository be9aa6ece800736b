"""Run as a script (the logical devices must be set before TensorFlow starts): trains the
same steps with one replica x batch 8 and with two replicas (2 logical CPUs) x batch 4 from
the same initial weights and data, and prints both runs' losses, weights and
self-adjusting smooth L1 state as JSON. Used by test_distribute.py."""

import json
import os
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from retinamask_tf.data import pipeline, synthetic  # noqa: E402
from retinamask_tf.training.trainer import Trainer  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402


def main(out_dir, steps):
    shapes = synthetic.ensure_dataset(os.path.join(out_dir, "shapes"), num_train=32, num_val=8,
                                      image_size=128, max_objects=6, min_object_size=12.0,
                                      seed=3, progress=False)
    cfg = tiny_config(shapes, {"model.backbone.norm": "frozen", "train.batch_size": 8,
                               "train.steps": steps, "train.clip_grad_norm": 1.0,
                               "train.checkpoint_every": 1000})
    datasets = pipeline.load_splits(cfg.data)
    runs = {}
    for name, strategy in (
            ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
            ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        trainer = Trainer(cfg, os.path.join(out_dir, name), strategy=strategy, datasets=datasets)
        step_fn, losses = trainer._make_step_fn(), []
        for _ in range(steps):
            out = step_fn(trainer.iterator)
            values = {k: np.asarray(out[k]).tolist() for k in (
                "total_loss", "cls_loss", "box_loss", "mask_loss", "num_positives")}
            values["beta"] = [float(out[f"beta_{c}"]) for c in ("dy", "dx", "dh", "dw")]
            losses.append(values)
        layer = trainer.model.box_loss
        runs[name] = {
            "replicas": strategy.num_replicas_in_sync, "losses": losses,
            "weights": {v.path: v.numpy().ravel()[:64].tolist() for v in trainer.model.weights},
            "running_mean": layer.running_mean.numpy().tolist(),
            "running_var": layer.running_var.numpy().tolist()}
    json.dump(runs, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
