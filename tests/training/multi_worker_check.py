"""Run as a script, one process per worker, with TF_CONFIG set: trains the tiny config
under MultiWorkerMirroredStrategy and writes this worker's final step and weight checksums
to ``<out>/result_<task>.json``. Used by test_distribute.py."""

import json
import os
import sys

import numpy as np

from retinamask_tf import config as C
from retinamask_tf.training import distribute
from retinamask_tf.training.trainer import Trainer


def main(shapes_dir, model_dir, out_dir, steps, checkpoint_every):
    strategy = distribute.build_strategy("multi_worker_mirrored")
    paths = {k: os.path.join(shapes_dir, v) for k, v in (
        ("train_json", "train.json"), ("train_images", "images/train"),
        ("val_json", "val.json"), ("val_images", "images/val"))}
    overrides = {
        "data.kind": "coco", **{f"data.{k}": v for k, v in paths.items()},
        "data.short_side": 128, "data.long_side": 128, "data.max_instances": 8,
        "model.backbone.depth": 18, "model.backbone.width": 16, "model.backbone.norm": "frozen",
        "model.fpn.channels": 16, "model.head.channels": 16, "model.head.num_convs": 1,
        "model.mask_head.channels": 8, "model.mask_head.num_convs": 1,
        "model.mask_head.gt_mask_size": 32, "train.batch_size": 4, "train.steps": steps,
        "train.warmup_steps": 1, "train.lr_drop_steps": [], "train.base_lr": 0.005,
        "train.clip_grad_norm": 10.0, "train.checkpoint_every": checkpoint_every}
    cfg = C.load_config([], [f"{k}={v}" for k, v in overrides.items()])
    trainer = Trainer(cfg, model_dir, strategy=strategy)
    start = trainer.restore()
    result = trainer.train(progress=False)
    task_type, task_id = distribute.task()
    out = {"task": f"{task_type}_{task_id}", "chief": trainer.is_chief, "start": start,
           "step": trainer.step, "loss": result["total_loss"],
           "weights": {v.path: float(np.sum(v.numpy().astype(np.float64)))
                       for v in trainer.model.weights}}
    with open(os.path.join(out_dir, f"result_{task_type}_{task_id}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
