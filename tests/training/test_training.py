import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from retinamask_tf import config as C
from retinamask_tf.modeling.retinamask import NonFiniteLossError
from retinamask_tf.training.trainer import Trainer
from tests.conftest import tiny_overrides

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _overrides(shapes, **extra):
    """The shared tiny config with this file's own model and schedule: width 8, 32-channel
    FPN/head, 16-channel mask head, batch 4, 60 steps."""
    values = tiny_overrides(shapes, {
        "model.backbone.width": 8, "model.fpn.channels": 32, "model.head.channels": 32,
        "model.mask_head.channels": 16, "train.batch_size": 4, "train.steps": 60,
        "train.base_lr": 0.01, "train.warmup_steps": 10, "train.clip_grad_norm": 10.0,
        "train.checkpoint_every": 1000, "train.summary_every": 5,
        "train.checkpoint_data_iterator": True, "eval.batch_size": 6, **extra})
    return [f"{k}={v}" for k, v in values.items()]


def _config(shapes, **extra):
    return C.load_config([], _overrides(shapes, **extra))


def _losses(trainer, steps):
    fn = trainer._make_step_fn()
    return [float(fn(trainer.iterator)["total_loss"]) for _ in range(steps)]


def test_loss_falls_when_fitting_one_batch(tiny_shapes, tmp_path):
    """The whole train step (matching, focal + self-adjusting L1, SGD) can fit a batch."""
    trainer = Trainer(_config(tiny_shapes, **{"train.base_lr": 0.02}), str(tmp_path))
    batch = next(trainer.iterator)
    trainer.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    losses = _losses(trainer, 40)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert np.isfinite(losses).all()
    assert last < 0.35 * first, (first, last)
    beta = trainer.model.box_loss.beta.numpy()
    assert (beta < 0.11).any() and (beta >= 1e-3).all()  # self-adjusting state moved


def test_mask_loss_falls_and_reaches_the_backbone(tiny_shapes, tmp_path):
    """The mask branch learns, and its gradient flows through RoIAlign into FPN and backbone."""
    trainer = Trainer(_config(tiny_shapes, **{"train.base_lr": 0.02}), str(tmp_path))
    batch = next(trainer.iterator)
    model = trainer.model
    features, labels = batch
    with tf.GradientTape() as tape:
        pyramid = model.features(features["images"], training=True)
        outputs = model.head(pyramid, training=True)
        det = model.mask_training_detections(outputs, features["image_info"])
        mask = model.mask_branch.losses(pyramid, det, labels, training=True)
    grads = tape.gradient(mask["mask_loss"], model.backbone.trainable_variables
                          + model.fpn.trainable_variables + model.head.trainable_variables)
    nb, nf = len(model.backbone.trainable_variables), len(model.fpn.trainable_variables)
    norm = lambda gs: sum(float(tf.reduce_sum(g ** 2)) for g in gs if g is not None)  # noqa: E731
    assert norm(grads[:nb]) > 0 and norm(grads[nb:nb + nf]) > 0
    assert all(g is None for g in grads[nb + nf:])  # RoIs are stop-gradient: no path to the head
    trainer.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    fn = trainer._make_step_fn()
    values = [fn(trainer.iterator) for _ in range(30)]
    first = np.mean([float(v["mask_loss"]) for v in values[:3]])
    last = np.mean([float(v["mask_loss"]) for v in values[-3:]])
    assert float(values[0]["num_mask_rois"]) >= float(tf.reduce_sum(tf.cast(labels["gt_valid"],
                                                                            tf.float32)))
    assert last < 0.6 * first, (first, last)


def test_resume_continues_exactly(tiny_shapes, tmp_path):
    """6 steps + restart + 3 steps == 9 uninterrupted steps: weights, optimizer and beta."""
    tf.config.experimental.enable_op_determinism()
    try:
        _check_resume(tiny_shapes, tmp_path)
    finally:  # not for the tests after this one (XLA refuses some ops under determinism)
        tf_config.disable_op_determinism()


def _check_resume(tiny_shapes, tmp_path):
    cfg = _config(tiny_shapes, **{"train.steps": 9, "train.warmup_steps": 3,
                                  "train.checkpoint_every": 3, "data.num_parallel_calls": 1})
    straight = Trainer(cfg, str(tmp_path / "a"))
    straight.train(progress=False)
    first = Trainer(cfg, str(tmp_path / "b"))
    first.train(steps=6, progress=False)
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints"))[-1].startswith("ckpt-6")
    resumed = Trainer(cfg, str(tmp_path / "b"))
    assert resumed.restore() == 6
    np.testing.assert_allclose(resumed.model.box_loss.running_mean.numpy(),
                               first.model.box_loss.running_mean.numpy())
    resumed.train(progress=False)
    assert resumed.step == 9
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_changed_config_refuses_to_resume(tiny_shapes, tmp_path):
    first = Trainer(_config(tiny_shapes), str(tmp_path))
    with pytest.raises(C.ConfigError, match=r"model\.head\.channels"):
        Trainer(_config(tiny_shapes, **{"model.head.channels": 16}), str(tmp_path))
    Trainer(_config(tiny_shapes, **{"train.steps": 99}), str(tmp_path))  # allowed
    Trainer(_config(tiny_shapes, **{"data.verify_images": "header"}), str(tmp_path))  # allowed
    with pytest.raises(C.ConfigError, match=r"data\.train_tfrecord"):  # another input pipeline
        Trainer(_config(tiny_shapes, **{"data.train_tfrecord": "x-meta.json"}), str(tmp_path),
                datasets=(first.train_data, first.val_data))


def test_non_finite_loss_stops_with_the_step(tiny_shapes, tmp_path):
    cfg = _config(tiny_shapes, **{"train.base_lr": 1e9, "train.warmup_steps": 0,
                                  "train.clip_grad_norm": "null", "train.checkpoint_every": 1})
    trainer = Trainer(cfg, str(tmp_path))
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+)") as err:
        trainer.train(progress=False)
    bad_step = int(err.value.args[0].split("at step ")[1].split()[0])
    saved = [int(n.split("-")[1].split(".")[0]) for n in os.listdir(tmp_path / "checkpoints")
             if n.startswith("ckpt-")]
    assert saved and max(saved) == bad_step - 1

    # The command line prints the message (with the last good checkpoint), no traceback,
    # and exits non-zero.
    cmd = [sys.executable, os.path.join(REPO, "main.py"), "--mode=train_and_eval",
           f"--model_dir={tmp_path / 'cli'}"]
    cmd += [f"--override={o}" for o in _overrides(
        tiny_shapes, **{"train.base_lr": 1e9, "train.warmup_steps": 0, "train.steps": 8,
                        "train.clip_grad_norm": "null", "train.checkpoint_every": 1})]
    out = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "error: training stopped: loss became" in out.stderr
    last = out.stderr.split("Last checkpoint: ")[1].split(". ")[0]
    assert os.path.exists(last + ".index"), last


def test_kill_9_then_same_command_resumes(tiny_shapes, tmp_path):
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(REPO, "main.py"), "--mode=train", f"--model_dir={model_dir}"]
    for o in _overrides(tiny_shapes, **{"train.steps": 400, "train.checkpoint_every": 5}):
        cmd.append(f"--override={o}")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(ckpt_dir) and any(n.startswith("ckpt-10.") for n in os.listdir(ckpt_dir)):
            break
        time.sleep(0.5)
    # A second training into the same folder is refused, naming the one that holds it.
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and proc.poll() is None, second.stderr[-3000:]
    assert f"in use by another training run (pid {proc.pid} on host " in second.stderr
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The killed run's lock does not block the same command, which resumes.
    last = max(int(n.split("-")[1].split(".")[0]) for n in os.listdir(ckpt_dir)
               if n.startswith("ckpt-"))
    end = last + 10
    cmd = [c.replace("train.steps=400", f"train.steps={end}") for c in cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    step = int(out.stdout.split("Resumed from")[1].split("at step ")[1].split()[0])
    assert step == last and step >= 10 and step % 5 == 0
    assert f"Training done at step {end}" in out.stdout
    # Running the finished command again says so and succeeds.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Training had already finished: the checkpoint is at step {end}" in again.stdout
