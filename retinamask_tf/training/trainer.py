"""The training loop: strategy, checkpoints with exact resume, summaries, progress.

Resume contract: kill the process at any point and run the same command again;
training continues from the last checkpoint with the same step, optimizer slots,
self-adjusting-L1 state and (with ``train.checkpoint_data_iterator``) the same
input position. A non-finite loss stops training before anything is saved.
"""

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from retinamask_tf import config as config_lib
from retinamask_tf import run_dir
from retinamask_tf.data import pipeline
from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.runtime_skips import RuntimeSkips
from retinamask_tf.modeling import factory
from retinamask_tf.losses.smooth_l1 import COORDS
from retinamask_tf.modeling.retinamask import NonFiniteLossError
from retinamask_tf.training import distribute
from retinamask_tf.training.optimizer import build_optimizer
from retinamask_tf.progress import Progress

def resolve_num_classes(config, train_dataset):
    k = train_dataset.num_classes
    if config.model.num_classes is None:
        return config_lib.replace(config, **{"model.num_classes": k})
    if config.model.num_classes != k:
        raise config_lib.ConfigError(
            f"config key 'model.num_classes' is {config.model.num_classes} but "
            f"{train_dataset.json_path} has {k} categories")
    return config


class Trainer:
    """Owns the model, optimizer, data iterator and checkpoint of one training run."""

    def __init__(self, config, model_dir, strategy=None, datasets=None):
        """``datasets``: (train, val) splits if already loaded, else from ``config.data``.
        Writes ``model_dir``'s config.yaml and label map (``run_dir``), or checks them
        against ``config`` when resuming."""
        self.strategy = strategy or tf.distribute.get_strategy()
        distribute.check_global_batch(config.train.batch_size, self.strategy)
        distribute.check_jit_compile(config.train.jit_compile, self.strategy)
        distribute.check_data_iterator_checkpoint(config.train.checkpoint_data_iterator,
                                                  self.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        self.train_data, self.val_data = datasets or pipeline.load_splits(
            config.data, masks=config.model.mask_head.enabled)
        self.config = resolve_num_classes(config, self.train_data)
        self.model_dir = model_dir
        if self.is_chief:  # other workers of a multi-worker run write nothing
            run_dir.write_config(self.config, model_dir)
            run_dir.write_label_map(model_dir, self.train_data.class_ids, self.train_data.class_names)
        keras.utils.set_random_seed(self.config.train.seed)
        with self.strategy.scope():
            # The policy is set while the model is built only: its layers keep it, and
            # models built later in this process (evaluation, export) stay float32.
            self.model = factory.build_model(self.config,
                                             dtype_policy=self.config.train.precision)
            self.optimizer = build_optimizer(self.config.train)
            self.model.compile(optimizer=self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        c = self.config
        # Images that stop decoding after the start-up check: named in the log, listed here.
        self.skips = RuntimeSkips(self.train_data.json_path, total=self.train_data.num_examples)
        dataset = pipeline.dataset_for(c, self.train_data, training=True, skips=self.skips)
        self.dataset = self.strategy.experimental_distribute_dataset(dataset)
        self.iterator = iter(self.dataset)
        items = {"model": self.model, "optimizer": self.optimizer}
        if c.train.checkpoint_data_iterator:
            items["data_iterator"] = self.iterator
        self.checkpoint = tf.train.Checkpoint(**items)
        # Every worker saves (a collective); only the chief's checkpoints are kept and read
        # (``restore`` reads run_dir.latest_checkpoint(model_dir), the chief's).
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, run_dir.checkpoint_dir(distribute.worker_dir(model_dir, self.strategy)),
            max_to_keep=c.train.keep_checkpoints if self.is_chief else 1,
            step_counter=self.optimizer.iterations)
        self.writer = (tf.summary.create_file_writer(os.path.join(model_dir, "train"))
                       if self.is_chief else tf.summary.create_noop_writer())
        self._step_fn = None

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """Restores the latest checkpoint if there is one; returns its step (0 if none)."""
        latest = run_dir.latest_checkpoint(self.model_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if self.is_chief:
                print(f"Resumed from {latest} at step {self.step}", flush=True)
        return self.step

    def _make_step_fn(self):
        strategy, model = self.strategy, self.model
        summed = ("total_loss", "cls_loss", "box_loss", "mask_loss")
        jit = bool(self.config.train.jit_compile)

        def step_on_data(data):  # the XLA-compilable NMS and crops when compiled with XLA
            out = strategy.run(model.train_step_with, args=(data,), kwargs={"xla_compatible": jit})
            reduced = {}
            for k, v in out.items():
                op = tf.distribute.ReduceOp.SUM if k in summed else tf.distribute.ReduceOp.MEAN
                reduced[k] = strategy.reduce(op, v, axis=None)
            return reduced

        if jit:
            # One replica (see distribute.check_jit_compile): XLA compiles the step and the
            # reductions, as Keras' own fit() does. Reading the input cannot be compiled,
            # so it stays outside, in step_fn.
            step_on_data = tf.function(step_on_data, jit_compile=True)

        @tf.function
        def step_fn(iterator):
            return step_on_data(next(iterator))

        return step_fn

    def _summaries(self, step, values, rate):
        layer = self.model.box_loss
        with self.writer.as_default(step=step):
            for k in ("total_loss", "cls_loss", "box_loss", "mask_loss", "num_positives",
                      "num_mask_rois", "mask_rois_dropped", "mask_rois_computed",
                      "learning_rate"):
                if k in values:
                    tf.summary.scalar(k, values[k])
            for key in layer.summaries():  # the box loss's own scalars: beta/dy, ...
                group, coord = key.rsplit("_", 1)
                tf.summary.scalar(f"{group}/{coord}", values[key])
            tf.summary.scalar("steps_per_sec", rate)

    def save(self):
        path = self.manager.save(checkpoint_number=self.step)
        return path

    def train(self, steps=None, progress=True):
        """Trains until ``steps`` (default train.steps) optimizer steps are done.

        Returns:
          dict of the last step's values (floats; ``beta`` the list of beta_dy..beta_dw),
          plus ``steps_run`` (0 when the
          checkpoint was already at ``steps``: a finished run, re-run) and ``steps_per_sec``.
        Raises:
          NonFiniteLossError: naming the step; no checkpoint is written for it.
          DatasetError: when no training image can be decoded any more.
        """
        total = int(steps or self.config.train.steps)
        start = self.restore()
        if self._step_fn is None:
            self._step_fn = self._make_step_fn()
        bar = Progress(total, initial=start) if progress and self.is_chief else None
        every_ckpt = self.config.train.checkpoint_every
        every_summary = self.config.train.summary_every
        values = {}
        t0, s0 = time.time(), start
        steady = None  # (time, step) at the end of the first step: the pace leaves out tracing
        while self.step < total:
            try:
                out = self._step_fn(self.iterator)
            except tf.errors.OpError as e:
                if self.skips.exhausted:  # every image failed to decode: say so, not how
                    raise DatasetError(
                        f"{self.skips.name}: none of the {self.skips.total} training images "
                        f"could be decoded: {self.skips.summary()}; last checkpoint: "
                        f"{self.manager.latest_checkpoint}") from e
                raise
            step = self.step
            values = {k: np.asarray(v) for k, v in out.items()}
            loss = float(values["total_loss"])
            if not math.isfinite(loss):
                last = self.manager.latest_checkpoint or "none"
                raise NonFiniteLossError(
                    f"loss became {loss} at step {step} (cls_loss={float(values['cls_loss'])}, "
                    f"box_loss={float(values['box_loss'])}, "
                    f"mask_loss={float(values.get('mask_loss', 0.0))}); nothing was saved for this step. "
                    f"Last checkpoint: {last}. Lower train.base_lr, lengthen train.warmup_steps "
                    "or set train.clip_grad_norm, then run again to resume.")
            if steady is None:
                steady = (time.time(), step)
            rate = _pace(steady, step, t0, s0)
            if bar:
                parts = {"loss": loss, "cls": float(values["cls_loss"]),
                         "box": float(values["box_loss"])}
                if "mask_loss" in values:
                    parts["mask"] = float(values["mask_loss"])
                bar.update(step, **parts, lr=float(values["learning_rate"]))
            if step % every_summary == 0 or step == total:
                self._summaries(step, values, rate)
            if step % every_ckpt == 0 or step == total:
                self.save()
        self.writer.flush()
        result = {k: (v.tolist() if np.ndim(v) else float(v)) for k, v in values.items()}
        if values:
            if all(f"beta_{c}" in result for c in COORDS):
                result["beta"] = [result[f"beta_{c}"] for c in COORDS]
        result["steps_run"] = self.step - s0
        result["steps_per_sec"] = _pace(steady, self.step, t0, s0) if steady else 0.0
        return result


def _pace(steady, step, t0, s0):
    """Steps per second since the end of the first step (what tracing and the input
    pipeline's start cost is left out), or over everything while that is all there is."""
    (t1, s1), now = steady, time.time()
    if step > s1:
        return (step - s1) / max(now - t1, 1e-9)
    return (step - s0) / max(now - t0, 1e-9)
