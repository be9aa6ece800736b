"""A training run's directory: the one module that reads and writes its layout.

  MODEL_DIR/config.yaml        the resolved config training used (``write_config``)
  MODEL_DIR/label_map.json     contiguous class index -> dataset category id and name
  MODEL_DIR/checkpoints/       tf.train.Checkpoint files, ``ckpt-<step>``
  MODEL_DIR/train/, eval/      TensorBoard logs; eval/ also metrics_<step>.json

Training writes config.yaml and the label map once and refuses to resume with a changed
key that shapes the model or the data (``RESUMABLE_CHANGES`` lists those that may change).
Evaluation, prediction and export restore the model through ``restore`` and never build a
training pipeline. TensorFlow is imported only to find and restore checkpoints, so that the
LiteRT runner reads label maps without it.
"""

import dataclasses
import json
import os
import re
from typing import List, Optional, Tuple

from retinamask_tf import config as config_lib

CONFIG_FILE = "config.yaml"
LABEL_MAP_FILE = "label_map.json"
CHECKPOINTS = "checkpoints"
# restore()'s precisions -> the Keras dtype policy the model is built under
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
# Keys a resumed run may change: schedule length, logging, evaluation, and where (not
# what) data and caches live. Switching data.train_tfrecord on or off is refused: the input
# pipeline (and a checkpointed data iterator) would not be the same.
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "train.summary_every",
                     "train.keep_checkpoints", "eval.", "model.mask_head.num_masks",
                     "model.mask_head.mask_threshold", "data.verify_images",
                     "data.image_check_cache", "data.num_parallel_calls", "data.tfds_data_dir",
                     "data.tfds_val_dir", "train.jit_compile")

# Keys an inference mode (eval, export, predict, ``retinamask_tf.load``) may override on a
# trained run: post-processing, evaluation, how many masks and at which threshold, how the
# convolutions compute, and which data is read (val for evaluation, train for int8
# calibration). Every other key shaped the trained weights or the training alone.
INFERENCE_CHANGES = ("postprocess.", "eval.", "model.mask_head.num_masks",
                     "model.mask_head.mask_threshold", "model.conv_algorithm", "data.kind",
                     "data.train_json", "data.train_images", "data.val_json",
                     "data.val_images", "data.verify_images", "data.image_check_cache",
                     "data.num_parallel_calls", "data.tfds_", "data.train_tfrecord",
                     "data.builtin.")


class RunDirError(RuntimeError):
    """A run directory cannot be restored: no checkpoint, or one that does not fit its
    config; the message names the file."""


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_path(model_dir):
    return os.path.join(model_dir, CONFIG_FILE)


def write_config(config, model_dir):
    """Writes the resolved config to ``model_dir``; if one is there already (a resumed
    run), refuses with ConfigError when a key that shapes the model or data differs."""
    path = config_path(model_dir)
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
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config_lib.to_yaml(config))
    os.replace(tmp, path)
    return path


def read_config(model_dir, overrides=()):
    """The resolved config a training run wrote to ``model_dir`` (+ ``key=value`` overrides
    of the keys inference may change, ``INFERENCE_CHANGES``; any other is a ConfigError
    naming it)."""
    path = config_path(model_dir)
    if not os.path.exists(path):
        raise config_lib.ConfigError(f"{path} not found: is --model_dir a training directory?")
    base = config_lib.load_config([path])
    config = config_lib.load_config([path], overrides)
    old, new = (_flatten(config_lib.to_dict(c)) for c in (base, config))
    fixed = [k for k in new if old.get(k) != new[k]
             and not any(k.startswith(p) for p in INFERENCE_CHANGES)]
    if fixed:
        raise config_lib.ConfigError(
            "--override " + ", ".join(f"'{k}' ({old.get(k)!r} -> {new[k]!r})" for k in fixed)
            + f": the run in {model_dir} was trained with the first value and this key cannot "
            "change without training again (train into a new --model_dir, starting from this "
            "run's weights if you like); inference modes change only "
            + ", ".join(p + ("*" if p.endswith((".", "_")) else "") for p in INFERENCE_CHANGES))
    return config


def write_label_map(folder, class_ids, class_names):
    """Writes ``folder/label_map.json``: [{"index", "id", "name"}, ...] (atomically)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LABEL_MAP_FILE)
    entries = [{"index": i, "id": int(c), "name": str(n)}
               for i, (c, n) in enumerate(zip(class_ids, class_names))]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)
    return path


def read_label_map(folder):
    """(class_ids, class_names) written by ``write_label_map``; FileNotFoundError naming
    the path if there is none."""
    path = os.path.join(folder, LABEL_MAP_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: train with this version first, or write it "
                                "with retinamask_tf.run_dir.write_label_map")
    with open(path) as f:
        entries = sorted(json.load(f), key=lambda e: e["index"])
    return [e["id"] for e in entries], [e["name"] for e in entries]


def categories(class_ids, class_names):
    """A label map as COCO categories ``[{"id", "name"}]`` in class-index order (the class
    mapping ``data.pipeline.load_val`` takes)."""
    return [{"id": int(i), "name": str(n)} for i, n in zip(class_ids, class_names)]


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINTS)


def latest_checkpoint(model_dir):
    """The newest checkpoint prefix under ``model_dir/checkpoints``, or None."""
    import tensorflow as tf
    return tf.train.latest_checkpoint(checkpoint_dir(model_dir))


def checkpoint_step(checkpoint):
    """The step in a checkpoint prefix ``.../ckpt-<step>``."""
    match = re.search(r"-(\d+)$", checkpoint)
    if not match:
        raise RunDirError(f"cannot read a step from the checkpoint name {checkpoint}")
    return int(match.group(1))


def _stored_num_classes(message, num_anchors, num_classes):
    """The class count of a checkpoint whose class head did not fit the model: read from
    the restore error's "incompatible tensor with shape (..., A*K') ... variable with shape
    (..., A*K)" (the class head is the one variable whose last dimension is
    ``num_anchors * num_classes``); None when the error is about something else."""
    pattern = (r"incompatible tensor with shape \(([\d, ]*)\) when attempting to restore "
               r"variable with shape \(([\d, ]*)\)")
    for stored, wanted in re.findall(pattern, message):
        stored = [int(v) for v in stored.replace(" ", "").split(",") if v]
        wanted = [int(v) for v in wanted.replace(" ", "").split(",") if v]
        if (stored and wanted and len(stored) == len(wanted) and stored[:-1] == wanted[:-1]
                and wanted[-1] == num_anchors * num_classes and stored[-1] % num_anchors == 0):
            return stored[-1] // num_anchors
    return None


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    """A model restored from a run directory, float32, ready for ``model.detect``."""

    model: object  # modeling.retinamask.RetinaMask
    config: config_lib.ExperimentConfig  # as restored (mask head off when not restored)
    class_ids: List[int]  # dataset category id of each contiguous class index
    class_names: List[str]
    checkpoint: str
    step: int


def restore(model_dir, include_masks: Optional[bool] = None, checkpoint: Optional[str] = None,
            overrides: Tuple[str, ...] = (), precision: str = "float32") -> RestoredRun:
    """Rebuilds the run's model from its config.yaml and restores a checkpoint into it.

    Args:
      model_dir: a directory written by training (config.yaml, label_map.json, checkpoints/).
      include_masks: keep the mask head (the config must have it); None: as the run has it.
        False rebuilds the model without the mask head and restores the detector's weights
        only, so that its graph is RetinaNet's.
      checkpoint: a checkpoint prefix; default the latest in ``model_dir/checkpoints``.
      overrides: ``key=value`` config overrides (evaluation and post-processing settings).
      precision: ``float32``, or ``bfloat16``: the network computes in bfloat16 (Keras'
        ``mixed_bfloat16`` policy: float32 weights, cast at each use; the heads' outputs,
        box decoding and NMS stay float32).
    Raises:
      ConfigError: no config.yaml (not a training directory) or a bad override.
      RunDirError: no checkpoint, a mask model of a run without mask head, a label map that
        does not fit the config, or a checkpoint whose variables do not fit the config
        (the message names them).
    """
    import tensorflow as tf

    from retinamask_tf.modeling import factory
    if precision not in PRECISIONS:
        raise RunDirError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    config = read_config(model_dir, overrides)
    has_masks = config.model.mask_head.enabled
    include_masks = has_masks if include_masks is None else bool(include_masks)
    if include_masks and not has_masks:
        raise RunDirError(f"{config_path(model_dir)} has model.mask_head.enabled=false: "
                          "there is no mask head to restore")
    if not include_masks:
        config = config_lib.replace(config, **{"model.mask_head.enabled": False})
    try:
        class_ids, class_names = read_label_map(model_dir)
    except FileNotFoundError as e:
        raise RunDirError(str(e)) from e
    if len(class_ids) != config.model.num_classes:
        raise RunDirError(f"{model_dir}: {LABEL_MAP_FILE} has {len(class_ids)} classes but "
                          f"{CONFIG_FILE} has model.num_classes={config.model.num_classes}")
    checkpoint = checkpoint or latest_checkpoint(model_dir)
    if not checkpoint:
        raise RunDirError(f"no checkpoint in {checkpoint_dir(model_dir)}")
    model = factory.build_model(config, dtype_policy=PRECISIONS[precision])
    try:
        status = tf.train.Checkpoint(model=model).restore(checkpoint)
        status.expect_partial()  # optimizer slots, data iterator, (the mask head)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        stored = _stored_num_classes(str(e), config.anchors.num_anchors,
                                     config.model.num_classes)
        if stored is not None:
            raise RunDirError(f"checkpoint {checkpoint} has {stored} classes but "
                              f"{config_path(model_dir)} has model.num_classes="
                              f"{config.model.num_classes}") from e
        raise RunDirError(f"checkpoint {checkpoint} does not match {config_path(model_dir)}: "
                          f"{str(e).splitlines()[0][:500]}") from e
    return RestoredRun(model, config, list(class_ids), list(class_names), checkpoint,
                       checkpoint_step(checkpoint))
