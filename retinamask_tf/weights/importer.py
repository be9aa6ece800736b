"""``--mode=import_weights``: a PyTorch checkpoint -> a complete run directory.

The directory holds what training writes (config.yaml, label_map.json, a step-0
checkpoint with the optimizer's empty state, ``imported.json`` saying where the weights
came from), so ``--mode=eval``, ``export``, ``predict`` and ``train`` (fine-tuning) use it
as they use a run of ours.
"""

import hashlib
import json
import os
import re

import numpy as np

from retinamask_tf import config as config_lib
from retinamask_tf import run_dir
from retinamask_tf.weights import convert, pth, sources
from retinamask_tf.weights.coco_classes import COCO_IDS, COCO_NAMES

IMPORTED_FILE = "imported.json"


class WeightsImportError(run_dir.RunDirError):
    """Weights that cannot be imported (names the file and the key or setting)."""


def infer_depth(state, source):
    """ResNet depth of a state dict: 18/34 (basic blocks) or 50/101 (bottlenecks), read
    from the number of blocks in its third stage."""
    body = "backbone.body." if source.detector else ""
    blocks = {int(m.group(1)) for k in state
              for m in [re.match(re.escape(body) + r"layer3\.(\d+)\.", k)] if m}
    if not blocks:
        raise convert.WeightsError(f"key {body}layer3.0.conv1.weight is missing: not a "
                                   f"{source.name} checkpoint (no ResNet stage 4 found)")
    bottleneck = f"{body}layer1.0.conv3.weight" in state
    n = max(blocks) + 1
    table = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}
    if (bottleneck, n) not in table:
        raise convert.WeightsError(f"{body}layer3 has {n} {'bottleneck' if bottleneck else 'basic'}"
                                   " blocks: not ResNet-18/34/50/101")
    return table[(bottleneck, n)]


# name -> (blocks, output channels of the last block at width 1)
_MOBILENET_V3 = {"mobilenet_v3_large": (15, 160), "mobilenet_v3_small": (11, 96)}


def infer_mobilenet_v3(state, source):
    """The name of a torchvision MobileNetV3 state dict (large or small, from its number of
    blocks); its width must be 1 (at other widths torchvision rounds each block's expansion
    and Keras the expansion ratio times the rounded input: the layers differ)."""
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"features\.(\d+)\.block\.", k)]
              if m}
    name = next((n for n, (count, _) in _MOBILENET_V3.items() if len(blocks) == count), None)
    if name is None:
        raise convert.WeightsError(f"{len(blocks)} blocks under features.N.block: not a "
                                   f"torchvision mobilenet_v3_large (15) or _small (11) in {source.name}")
    project = max((k for k in state if re.match(rf"features\.{max(blocks)}\.block\.\d+\.0\.weight$", k)),
                  key=lambda k: int(k.split(".")[3]))
    channels = int(np.asarray(state[project]).shape[0])
    if channels != _MOBILENET_V3[name][1]:
        raise convert.WeightsError(f"key {project}: {channels} channels where "
                                   f"{_MOBILENET_V3[name][1]} are needed: only width 1.0 "
                                   "torchvision MobileNetV3 weights fit Keras' architecture")
    return name


# A source's backbone family (``Source.backbone``) -> the config keys its file fixes.
BACKBONE_KEYS = {
    "resnet": lambda state, source: [  # (name=resnet is among the conventions)
        f"model.backbone.depth={infer_depth(state, source)}"],
    "mobilenet_v3": lambda state, source: [
        f"model.backbone.name={infer_mobilenet_v3(state, source)}", "model.backbone.alpha=1.0"],
}


def resolve_config(source, state, config_files=(), overrides=()):
    """The config of the imported run: the user's files (or COCO defaults without any),
    then the source's conventions, the backbone the file holds, then ``overrides``."""
    base = () if config_files else source.coco
    return config_lib.load_config(list(config_files), list(base) + list(source.conventions)
                                  + BACKBONE_KEYS[source.backbone](state, source)
                                  + list(overrides))


def _classes(config):
    """(category ids, names) the imported model predicts: COCO's 80 when the config names
    no training data, else the training split's."""
    from retinamask_tf.data import pipeline
    d = config.data
    if not pipeline.names_training_data(d):
        return list(COCO_IDS), list(COCO_NAMES)
    train, _ = pipeline.load_splits(d, masks=False)
    return list(train.class_ids), list(train.class_names)


def class_maps(source, class_ids, class_names):
    """(class_map, mask_class_map) from our classes to the source's channels, or
    (None, None) when our classes are not COCO categories (the predictors then keep
    their initialisation). A class matches when its id and name are COCO's."""
    coco = {cid: name.lower() for cid, name in zip(COCO_IDS, COCO_NAMES)}
    if not all(coco.get(int(c)) == str(n).lower() for c, n in zip(class_ids, class_names)):
        return None, None
    if source.class_channels == "category_id":  # torchvision: channel = category id
        return [int(c) for c in class_ids], None
    positions = [COCO_IDS.index(int(c)) for c in class_ids]
    return positions, [p + 1 for p in positions]  # mask logits: channel 0 is background


def import_weights(source_name, weights_path, model_dir, config_files=(), overrides=(),
                   say=print):
    """Writes a run directory at ``model_dir`` holding ``weights_path`` converted.

    Returns the dict written to ``imported.json``. Raises ``WeightsImportError`` (a
    ``RunDirError``) naming the file and the key for a checkpoint that does not fit."""
    import tensorflow as tf

    from retinamask_tf.modeling import factory
    from retinamask_tf.training.optimizer import build_optimizer

    source = sources.get(source_name)
    if run_dir.latest_checkpoint(model_dir):
        raise WeightsImportError(f"{model_dir} already holds checkpoints: import into a new "
                                 "--model_dir")
    try:
        state = pth.read_state_dict(weights_path)
    except pth.CheckpointFormatError as e:
        raise WeightsImportError(str(e)) from e
    try:
        config = resolve_config(source, state, config_files, overrides)
    except convert.WeightsError as e:
        raise WeightsImportError(f"{weights_path}: {e}") from e
    class_ids, class_names = _classes(config)
    if config.model.num_classes is None:
        config = config_lib.replace(config, **{"model.num_classes": len(class_ids)})
    if config.model.num_classes != len(class_ids):
        raise config_lib.ConfigError(f"config key 'model.num_classes' is "
                                     f"{config.model.num_classes} but the data has "
                                     f"{len(class_ids)} classes")
    class_map, mask_class_map = class_maps(source, class_ids, class_names)
    model = factory.build_model(config)
    try:
        kept = convert.load(model, state, source, class_map, mask_class_map)
    except convert.WeightsError as e:
        raise WeightsImportError(f"{weights_path}: {e}") from e
    optimizer = build_optimizer(config.train)
    model.compile(optimizer=optimizer)  # the object graph the trainer checkpoints
    optimizer.build(model.trainable_variables)
    run_dir.write_config(config, model_dir)
    run_dir.write_label_map(model_dir, class_ids, class_names)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, run_dir.checkpoint_dir(model_dir),
                                         max_to_keep=config.train.keep_checkpoints,
                                         step_counter=optimizer.iterations)
    path = manager.save(checkpoint_number=0)
    fresh = list(kept)
    if source.detector and model.has_masks and not source.has_masks:
        fresh.append("mask_head (the source has none)")
    if not source.detector:
        fresh.append("fpn, head" + (", mask_head" if model.has_masks else ""))
    info = {"source": source.name, "description": source.description,
            "weights": os.path.abspath(weights_path), "sha256": _sha256(weights_path),
            "tensors": len(state), "num_classes": len(class_ids),
            "backbone": _backbone_name(config.model.backbone),
            "initialised_not_imported": fresh, "checkpoint": path}
    with open(os.path.join(model_dir, IMPORTED_FILE), "w") as f:
        json.dump(info, f, indent=1)
    say(f"Imported {len(state)} tensors of {weights_path} ({source.description}) into "
        f"{model_dir}: {_backbone_name(config.model.backbone)}, {len(class_ids)} classes")
    if fresh:
        say("  left at their initialisation (trained by fine-tuning): " + "; ".join(fresh)
            + (" -- the class layers are re-initialised with the prior bias because the "
               "classes are not COCO's" if kept else ""))
    say(f"  config       {run_dir.config_path(model_dir)}")
    say(f"  checkpoint   {path}")
    return info


def _backbone_name(backbone):
    if backbone.name == "resnet":
        return f"ResNet-{backbone.depth}"
    return f"{backbone.name} (width {backbone.alpha:g})"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

