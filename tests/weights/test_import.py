"""--mode=import_weights end to end on the narrow torchvision fixture: a run directory that
restore, detection and fine-tuning use as they use a run of ours; a COCO import that does not
fit gives an error naming the file and the key."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from retinamask_tf import run_dir
from retinamask_tf.training.trainer import Trainer
from retinamask_tf.weights import importer, pth
from tests.conftest import REPO, tiny_overrides

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
WEIGHTS = os.path.join(GOLDEN, "torchvision_retinanet.pth")
NARROW = ["model.backbone.width=8", "model.fpn.channels=16", "model.head.channels=16"]


def test_fine_tune_an_import_on_other_classes(tiny_shapes, tmp_path):
    config_file = tmp_path / "mine.yaml"
    mine = tiny_overrides(tiny_shapes, {"train.steps": 2, "train.checkpoint_every": 2,
                                        "model.head.num_convs": 4})
    nested = {}
    for key, value in mine.items():
        if key.startswith(("model.backbone.width", "model.fpn.channels", "model.head.channels",
                           "model.backbone.norm")):
            continue
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    config_file.write_text(yaml.safe_dump(nested))
    model_dir = str(tmp_path / "run")
    info = importer.import_weights("torchvision_retinanet", WEIGHTS, model_dir, [str(config_file)],
                                   NARROW, say=lambda *a: None)
    # The shapes dataset's classes are not COCO's: class logits (and the mask head, which
    # torchvision has none of) keep their initialisation, everything else is imported.
    assert info["initialised_not_imported"] == ["cls_pred", "mask_head (the source has none)"]
    assert json.load(open(os.path.join(model_dir, "imported.json")))["source"] == "torchvision_retinanet"
    restored = run_dir.restore(model_dir)
    assert restored.step == 0 and restored.config.model.conv_padding == "symmetric"
    state = pth.read_state_dict(WEIGHTS)
    kernel = restored.model.backbone.get_layer("res3_0_2_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel, np.transpose(state["backbone.body.layer2.0.conv2.weight"],
                                                       (2, 3, 1, 0)))
    bias = restored.model.head.cls_pred.bias.numpy()
    np.testing.assert_allclose(bias, -np.log(0.99 / 0.01), rtol=1e-6)  # the prior bias

    # --mode=train continues the run from its config.yaml: two steps of fine-tuning
    trainer = Trainer(run_dir.read_config(model_dir), model_dir)
    result = trainer.train(progress=False)
    assert trainer.step == 2 and result["steps_run"] == 2 and np.isfinite(result["total_loss"])
    after = trainer.model.backbone.get_layer("res3_0_2_conv").kernel.numpy()
    assert np.max(np.abs(after - kernel)) > 0


def test_coco_import_that_does_not_fit_names_the_key(tmp_path):
    # The fixture has 5 classes; a COCO import asks for torchvision's channel of category 90.
    with pytest.raises(run_dir.RunDirError, match=r"torchvision_retinanet\.pth: key head\."
                       r"classification_head\.cls_logits\.weight: 5 classes per anchor"):
        importer.import_weights("torchvision_retinanet", WEIGHTS, str(tmp_path / "a"), (), NARROW,
                                say=lambda *a: None)
    assert not os.path.exists(tmp_path / "a" / "checkpoints")
    with pytest.raises(run_dir.RunDirError, match=r"key backbone\.body\.stem\.conv1\.weight is "
                       "missing: not a retinamask checkpoint"):
        importer.import_weights("retinamask", WEIGHTS, str(tmp_path / "b"), (), NARROW,
                                say=lambda *a: None)


def test_command_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    done = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=import_weights",
                           "--source=torchvision_retinanet", f"--weights={bad}",
                           f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "bad.pth: not a PyTorch checkpoint" in done.stderr
    assert "pickle" not in done.stderr.lower() and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=import_weights",
                           f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert done.returncode == 2 and "needs --source and --weights" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, not the help


def test_export_reads_only_the_val_split_an_import_names(coco128, tmp_path):
    """An imported COCO model's config has no training split: export calibrates int8 on the
    val images given by --override (with the run's label map), or skips int8 without any."""
    from retinamask_tf import config as C
    from retinamask_tf.cli import export
    from retinamask_tf.weights.coco_classes import COCO_IDS, COCO_NAMES

    run_dir.write_label_map(str(tmp_path), COCO_IDS, COCO_NAMES)
    bare = C.load_config([], ["data.kind=coco"]).data
    assert export._splits(str(tmp_path), bare) == (None, None)
    json_path, images = coco128
    data = C.load_config([], ["data.kind=coco", f"data.val_json={json_path}",
                              f"data.val_images={images}", "data.verify_images=header"]).data
    train, val = export._splits(str(tmp_path), data)
    assert train is None and val.num_examples == 128
    assert list(val.class_ids) == list(COCO_IDS)
