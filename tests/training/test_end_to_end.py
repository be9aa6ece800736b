"""A real (small) training run whose AP must clear a bar, and its TFLite export. Marked slow:
~3 minutes."""

import pytest

from retinamask_tf import config as C
from retinamask_tf.data import synthetic
from retinamask_tf.evaluation.coco_evaluator import evaluate
from retinamask_tf.evaluation.predictor_eval import evaluate_predictor
from retinamask_tf.export import tflite
from retinamask_tf.export.litert_runner import LiteRTPredictor
from retinamask_tf.training.trainer import Trainer


@pytest.mark.slow
def test_train_then_evaluate_clears_the_bar(tmp_path):
    shapes = synthetic.ensure_dataset(str(tmp_path / "data"), num_train=400, num_val=40,
                                      image_size=128, max_objects=5, min_object_size=12.0,
                                      seed=11, progress=False)
    overrides = {
        "data.kind": "coco", "data.train_json": shapes["train_json"],
        "data.train_images": shapes["train_images"], "data.val_json": shapes["val_json"],
        "data.val_images": shapes["val_images"], "data.short_side": 128, "data.long_side": 128,
        "data.max_instances": 8, "model.backbone.depth": 18,
        "model.backbone.width": 16, "model.backbone.norm": "batch_norm", "model.fpn.channels": 64,
        "model.head.channels": 64, "model.head.num_convs": 2, "model.mask_head.num_convs": 2,
        "model.mask_head.channels": 32, "model.mask_head.max_train_rois": 16,
        "model.mask_head.gt_mask_size": 56, "train.batch_size": 8,
        "train.steps": 600, "train.base_lr": 0.02, "train.warmup_steps": 100,
        "train.lr_drop_steps": [450, 550], "train.clip_grad_norm": 10.0,
        "train.checkpoint_every": 600, "eval.batch_size": 20,
    }
    cfg = C.load_config([], [f"{k}={v}" for k, v in overrides.items()])
    trainer = Trainer(cfg, str(tmp_path / "run"))
    result = trainer.train(progress=False)
    report = evaluate(trainer.model, trainer.val_data, trainer.config, progress=False)
    print(result, report["bbox"], report["segm"])
    assert report["bbox"]["AP50"] >= AP50_BAR, report["bbox"]
    assert report["bbox"]["AP"] >= AP_BAR, report["bbox"]
    assert report["segm"]["AP50"] >= SEGM_AP50_BAR, report["segm"]
    # The exported TFLite models on the same val images. float32: the same AP up to float
    # round-off (the images are 128 px, so the letterbox is an identity and both see the same
    # pixels; XNNPACK vs oneDNN differences of ~1e-5 reorder near-tied low scores of this
    # weak model: measured |dAP50| 0.0025). int8: a bounded drop.
    paths = tflite.export_tflite(str(tmp_path / "run"), str(tmp_path / "tflite"),
                                 ["float32", "int8"], num_calibration_images=50, progress=None)
    lite = {v: evaluate_predictor(LiteRTPredictor(p), trainer.val_data, progress=False)["bbox"]
            for v, p in paths.items()}
    print("tflite", lite)
    assert abs(lite["float32"]["AP"] - report["bbox"]["AP"]) <= 0.005, lite
    assert abs(lite["float32"]["AP50"] - report["bbox"]["AP50"]) <= 0.005, lite
    assert lite["int8"]["AP50"] >= INT8_AP50_FRACTION * report["bbox"]["AP50"], lite


# Measured on the 2-core CPU machine after these 600 steps (156 s): bbox AP 0.047, AP50
# 0.117; segm AP 0.034, AP50 0.100 (an untrained model scores ~0.00; the same run without
# the mask head gave bbox AP 0.027, AP50 0.086). The bars leave half or more for noise.
AP50_BAR = 0.05
AP_BAR = 0.015
SEGM_AP50_BAR = 0.05
# int8 TFLite (network quantized, post-processing float) keeps at least this fraction of
# the float AP50. On the demo (bench/bench_tflite.py) it kept 0.405 / 0.417 = 97%; here
# 0.114 / 0.117 (measured).
INT8_AP50_FRACTION = 0.7
