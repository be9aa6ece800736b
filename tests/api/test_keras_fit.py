"""Keras-native training: compile(optimizer) and fit(dataset, callbacks) on the model's own
train_step, with TensorBoard, BackupAndRestore and ModelCheckpoint; and the Python API."""

import os

import keras
import numpy as np
import pytest
import retinamask_tf as rm
from retinamask_tf.data import pipeline
from retinamask_tf.training.optimizer import build_optimizer
from tests.conftest import tiny_overrides


class _StopAfter(keras.callbacks.Callback):
    """Raises at the end of epoch ``epoch``: a crash mid-training."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _setup(shapes):
    overrides = tiny_overrides(shapes, {"data.verify_images": "off"})
    cfg = rm.load_config([], [f"{k}={v}" for k, v in overrides.items()])
    train, val = pipeline.load_splits(cfg.data)
    cfg = rm.load_config([], [f"{k}={v}" for k, v in overrides.items()]
                         + [f"model.num_classes={train.num_classes}"])
    return cfg, train, val


def _model(cfg):
    keras.utils.set_random_seed(0)
    model = rm.build_model(cfg)
    model.compile(optimizer=build_optimizer(cfg.train))
    return model


def test_fit_with_keras_callbacks_resumes_and_checkpoints(tiny_shapes, tmp_path):
    cfg, train, val = _setup(tiny_shapes)
    backup, tb = str(tmp_path / "backup"), str(tmp_path / "tb")
    weights = str(tmp_path / "model.weights.h5")
    callbacks = [keras.callbacks.TensorBoard(tb),
                 keras.callbacks.BackupAndRestore(backup),
                 keras.callbacks.ModelCheckpoint(weights, save_weights_only=True)]
    model = _model(cfg)
    start_mean = model.box_loss.running_mean.numpy().copy()
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(rm.build_dataset(cfg, train, training=True), steps_per_epoch=3, epochs=4,
                  verbose=0, callbacks=callbacks + [_StopAfter(1)])
    crashed = [v.numpy().copy() for v in model.weights]
    # The self-adjusting loss's statistics moved (they are weights: backed up with them).
    assert not np.allclose(model.box_loss.running_mean.numpy(), start_mean)
    assert os.path.isdir(backup)

    # A fresh process would build a fresh model; fit() restores the backup and goes on at
    # epoch 2 (0-based) with the crashed model's weights and beta statistics.
    resumed = _model(cfg)
    seen = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(
            (epoch, [v.numpy().copy() for v in resumed.weights])))
    history = resumed.fit(rm.build_dataset(cfg, train, training=True), steps_per_epoch=3,
                          epochs=4, verbose=0, callbacks=callbacks + [watch])
    assert seen[0][0] == 2 and history.epoch == [2, 3]
    for a, b in zip(seen[0][1], crashed):
        np.testing.assert_array_equal(a, b)
    logs = history.history
    assert all(np.isfinite(logs[k]).all() for k in ("total_loss", "cls_loss", "box_loss",
                                                     "mask_loss", "beta_dy"))
    assert not os.path.exists(backup)  # removed once training finished

    # TensorBoard got the losses, the beta per coordinate and the learning rate.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(os.path.join(tb, "train")).Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    assert {"epoch_total_loss", "epoch_mask_loss", "epoch_beta_dw",
            "epoch_learning_rate"} <= tags, tags

    # ModelCheckpoint's weights restore into a new model that detects exactly the same.
    restored = rm.build_model(cfg)
    restored.load_weights(weights)
    features, _ = next(iter(rm.build_dataset(cfg, val, training=False)))
    want = resumed.detect(features["images"], features["image_info"])
    got = restored.detect(features["images"], features["image_info"])
    for key in ("boxes", "scores", "classes", "num_detections", "masks"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


def test_fit_runs_the_xla_forms_when_compiled_for_xla(tiny_shapes):
    """compile(jit_compile=True): fit's train step uses the XLA-compilable NMS and crops
    (chosen per call from Keras' own flag; the model holds no XLA state)."""
    cfg, train, _ = _setup(tiny_shapes)
    keras.utils.set_random_seed(0)
    model = rm.build_model(cfg)
    model.compile(optimizer=build_optimizer(cfg.train), jit_compile=True)
    history = model.fit(rm.build_dataset(cfg, train, training=True), steps_per_epoch=2,
                        epochs=1, verbose=0)
    assert model.jit_compile is True
    assert np.isfinite(history.history["total_loss"]).all()
    assert history.history["num_mask_rois"][0] > 0
