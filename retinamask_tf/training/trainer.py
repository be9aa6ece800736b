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
from retinamask_tf.data import pipeline
from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.runtime_skips import RuntimeSkips
from retinamask_tf.export.label_map import write_label_map
from retinamask_tf.modeling import factory
from retinamask_tf.modeling.retinamask import NonFiniteLossError
from retinamask_tf.training import distribute
from retinamask_tf.training.optimizer import build_optimizer
from retinamask_tf.training.progress import Progress

CONFIG_FILE = "config.yaml"
COORDS = ("dy", "dx", "dh", "dw")
# Keys a resumed run may change: schedule length, logging, evaluation, and where (not
# what) data and caches live. Switching data.train_tfrecord on or off is refused: the input
# pipeline (and a checkpointed data iterator) would not be the same.
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "train.summary_every",
                     "train.keep_checkpoints", "eval.", "model.mask_head.num_masks",
                     "model.mask_head.mask_threshold", "data.verify_images",
                     "data.image_check_cache", "data.num_parallel_calls", "data.tfds_data_dir",
                     "data.tfds_val_dir", "train.jit_compile")


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def write_or_check_config(config, model_dir):
    """Writes the resolved config to ``model_dir``; if one is there already (a resumed
    run), refuses to continue when a key that shapes the model or data differs."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if os.path.exists(path):
        old = _flatten(config_lib.to_dict(config_lib.load_config([path])))
        new = _flatten(config_lib.to_dict(config))
        diff = [k for k in new if old.get(k) != new[k]
                and not any(k.startswith(p) for p in RESUMABLE_CHANGES)]
        if diff:
            raise config_lib.ConfigError(
                f"{path} was written by an earlier run with different settings for "
                + ", ".join(f"'{k}' ({old.get(k)!r} -> {new[k]!r})" for k in diff)
                + "; use a new --model_dir, or the old settings to resume")
    os.makedirs(model_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write(config_lib.to_yaml(config))
    return path


def read_config(model_dir, overrides=()):
    """The resolved config a training run wrote to ``model_dir`` (+ overrides)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise config_lib.ConfigError(f"{path} not found: is --model_dir a training directory?")
    return config_lib.load_config([path], overrides)


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

    def __init__(self, config, model_dir, strategy=None, datasets=None, write_config=True):
        """``write_config=False`` (evaluation of a finished run) leaves ``model_dir``'s
        config.yaml and label map as training wrote them."""
        self.strategy = strategy or tf.distribute.get_strategy()
        distribute.check_global_batch(config.train.batch_size, self.strategy)
        distribute.check_jit_compile(config.train.jit_compile, self.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        self.train_data, self.val_data = datasets or pipeline.load_splits(config.data)
        self.config = resolve_num_classes(config, self.train_data)
        self.model_dir = model_dir
        if self.is_chief and write_config:  # other workers of a multi-worker run write nothing
            write_or_check_config(self.config, model_dir)
            write_label_map(model_dir, self.train_data.class_ids, self.train_data.class_names)
        keras.utils.set_random_seed(self.config.train.seed)
        with self.strategy.scope():
            # The policy is set while the model is built only: its layers keep it, and
            # models built later in this process (evaluation, export) stay float32.
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.config.train.precision)
            try:
                self.model = factory.build_model(self.config)
            finally:
                keras.config.set_dtype_policy(previous)
            self.optimizer = build_optimizer(self.config.train)
            self.model.compile(optimizer=self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        c = self.config
        # Images that stop decoding after the start-up check: named in the log, listed here.
        self.skips = RuntimeSkips(
            getattr(self.train_data, "json_path", "train"),
            total=getattr(self.train_data, "num_examples", None) or len(self.train_data.records))
        dataset = pipeline.build_dataset(
            self.train_data, c.train.batch_size, c.image_size, c.data.short_side,
            c.data.long_side, c.data.max_instances, training=True, hflip=c.data.hflip,
            shuffle_buffer=c.data.shuffle_buffer, seed=c.train.seed,
            num_parallel_calls=c.data.num_parallel_calls,
            mask_size=c.model.mask_head.gt_mask_size if c.model.mask_head.enabled else None,
            train_short_sides=c.data.train_short_sides, scale_jitter=c.data.scale_jitter,
            skips=self.skips)
        self.dataset = self.strategy.experimental_distribute_dataset(dataset)
        self.iterator = iter(self.dataset)
        items = {"model": self.model, "optimizer": self.optimizer}
        if c.train.checkpoint_data_iterator:
            items["data_iterator"] = self.iterator
        self.checkpoint = tf.train.Checkpoint(**items)
        # Every worker saves (a collective); only the chief's checkpoints are kept and read.
        self.chief_checkpoints = os.path.join(model_dir, "checkpoints")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(distribute.worker_dir(model_dir, self.strategy),
                                          "checkpoints"),
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
        latest = tf.train.latest_checkpoint(self.chief_checkpoints)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if self.is_chief:
                print(f"Resumed from {latest} at step {self.step}", flush=True)
        return self.step

    def _make_step_fn(self):
        strategy, model = self.strategy, self.model
        summed = ("total_loss", "cls_loss", "box_loss", "mask_loss")
        jit = bool(self.config.train.jit_compile)
        model.xla_compatible = model.xla_compatible or jit

        def step_on_data(data):
            out = strategy.run(model.train_step, args=(data,))
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
        layer = self.model.box_loss_layer
        with self.writer.as_default(step=step):
            for k in ("total_loss", "cls_loss", "box_loss", "mask_loss", "num_positives",
                      "num_mask_rois", "mask_rois_dropped", "learning_rate"):
                if k in values:
                    tf.summary.scalar(k, values[k])
            for i, name in enumerate(COORDS):
                tf.summary.scalar(f"beta/{name}", values["beta"][i])
                tf.summary.scalar(f"running_mean/{name}", layer.running_mean[i])
                tf.summary.scalar(f"running_var/{name}", layer.running_var[i])
            tf.summary.scalar("steps_per_sec", rate)

    def save(self):
        path = self.manager.save(checkpoint_number=self.step)
        return path

    def train(self, steps=None, progress=True):
        """Trains until ``steps`` (default train.steps) optimizer steps are done.

        Returns:
          dict of the last step's values (floats), plus ``steps_run`` (0 when the
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
            rate = (step - s0) / max(time.time() - t0, 1e-9)
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
        result["steps_run"] = self.step - s0
        result["steps_per_sec"] = (self.step - s0) / max(time.time() - t0, 1e-9)
        return result
