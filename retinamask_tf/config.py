"""Experiment configuration: frozen dataclasses, YAML overrides, one loader.

Every setting has a typed default here; YAML files and ``key=value`` overrides
replace defaults and nothing else. Unknown keys are rejected with their dotted
name, values are type-checked and validated when the config is built, and the
resolved config is written next to checkpoints (``to_yaml``) so that eval and
export read back exactly what training used.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Optional, Tuple

import yaml

BackboneNorm = Literal["frozen", "batch_norm", "sync_batch_norm", "group_norm"]
DatasetKind = Literal["builtin", "coco", "tfds"]
CrowdMode = Literal["drop", "ignore"]
VerifyImages = Literal["full", "header", "off"]
BoxLoss = Literal["self_adjusting", "smooth_l1"]
P6From = Literal["c5", "p5"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key."""


def _check(ok, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


@dataclasses.dataclass(frozen=True)
class BuiltinDataConfig:
    """The generated shapes dataset (``retinamask_tf.data.synthetic``)."""

    num_train: int = 1600
    num_val: int = 200
    image_size: int = 256
    max_objects: int = 15
    min_object_size: float = 12.0
    seed: int = 0
    cache_dir: str = "~/.cache/retinamask_tf"

    def __post_init__(self):
        _check(self.num_train > 0 and self.num_val > 0, "data.builtin.num_train/num_val", "must be > 0")
        _check(self.image_size >= 64, "data.builtin.image_size", "must be >= 64")
        _check(1 <= self.max_objects <= 100, "data.builtin.max_objects", "must be in [1, 100]")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input data and the parser (resize, flip, pad)."""

    kind: DatasetKind = "builtin"
    train_json: Optional[str] = None
    train_images: Optional[str] = None
    val_json: Optional[str] = None
    val_images: Optional[str] = None
    builtin: BuiltinDataConfig = BuiltinDataConfig()
    short_side: int = 800
    long_side: int = 1333
    max_instances: int = 100
    hflip: bool = True
    crowd: CrowdMode = "drop"
    shuffle_buffer: int = 1024
    num_parallel_calls: int = -1  # -1: tf.data.AUTOTUNE
    cache_decoded: bool = False
    # Start-up check of the image files (data/image_check.py): "full" decodes each once,
    # "header" reads headers only (for very large datasets), "off" trusts the files.
    verify_images: VerifyImages = "full"
    # Multi-scale training: the short side of each training image is drawn from this list
    # (long side still capped at long_side); null: always short_side. Evaluation and
    # export use short_side.
    train_short_sides: Optional[Tuple[int, ...]] = None
    # Scale jitter: each training image's resize scale is multiplied by a factor drawn
    # uniformly from [low, high] (the image still fits the padded size); null: off.
    scale_jitter: Optional[Tuple[float, float]] = None
    # Static padded (height, width); null: a square of long_side rounded up to the coarsest
    # stride. A landscape size such as [896, 1408] for 800x1333 saves the square's unused
    # rows; images that do not fit are scaled down to fit (aspect kept).
    padded_size: Optional[Tuple[int, int]] = None
    # Padded sizes are multiples of this. 128 (the P7 stride) is the released code's; any
    # multiple of 32 (the backbone's output stride) works, because P6/P7 and their anchor
    # grids take ceil(size / stride) cells: 32 pads 800x1333 to 800x1344 as torchvision
    # does, where 128 gives 896x1408 (17% more pixels to compute).
    pad_stride: int = 128
    # A -meta.json written by main.py --mode=make_tfrecords: training reads these TFRecords
    # instead of train_json/train_images (val stays JSON: COCO evaluation needs it).
    train_tfrecord: Optional[str] = None
    image_check_cache: Optional[str] = "~/.cache/retinamask_tf"  # null: no cache
    # data.kind=tfds: a TFDS detection builder (coco/2017 or one with its features: image,
    # objects/bbox, objects/label), read from tfds_data_dir (null: TFDS's default). Boxes
    # only: the mask head must be off. Val: val_json/val_images when given (TFDS labels are
    # joined to its categories by name), else tfds_val_split written once as a COCO JSON
    # + images into tfds_val_dir (null: <image_check_cache>/tfds/<name>/<split>).
    tfds_name: Optional[str] = None
    tfds_data_dir: Optional[str] = None
    tfds_train_split: str = "train"
    tfds_val_split: str = "validation"
    tfds_val_dir: Optional[str] = None

    def __post_init__(self):
        _check(self.short_side > 0 and self.long_side >= self.short_side,
               "data.short_side/long_side", "need 0 < short_side <= long_side")
        _check(self.max_instances > 0, "data.max_instances", "must be > 0")
        if self.train_short_sides is not None:
            _check(len(self.train_short_sides) > 0
                   and all(0 < s <= self.long_side for s in self.train_short_sides),
                   "data.train_short_sides", "need a non-empty list of sizes in (0, long_side]")
        if self.scale_jitter is not None:
            _check(len(self.scale_jitter) == 2 and 0 < self.scale_jitter[0] <= self.scale_jitter[1],
                   "data.scale_jitter", "need [low, high] with 0 < low <= high")
        _check(self.pad_stride > 0 and self.pad_stride % 32 == 0, "data.pad_stride",
               "must be a multiple of 32, the backbone's output stride")
        if self.padded_size is not None:
            _check(len(self.padded_size) == 2 and min(self.padded_size) > 0,
                   "data.padded_size", "need [height, width] > 0")
        if self.kind == "coco":
            for key in ("train_json", "train_images", "val_json", "val_images"):
                _check(getattr(self, key), f"data.{key}", "is required when data.kind is 'coco'")
        if self.kind == "tfds":
            _check(self.tfds_name, "data.tfds_name", "is required when data.kind is 'tfds' "
                   "(e.g. coco/2017)")
            _check(bool(self.val_json) == bool(self.val_images), "data.val_json/val_images",
                   "give both (val from a COCO JSON) or neither (val from data.tfds_val_split)")
            _check(not self.train_tfrecord, "data.train_tfrecord",
                   "must be null when data.kind is 'tfds' (training reads the TFDS builder)")


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """Anchors: size = anchor_scale * stride * 2^(i/num_scales), per aspect ratio."""

    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_scale: float = 4.0

    def __post_init__(self):
        _check(2 <= self.min_level <= self.max_level <= 8, "anchors.min_level/max_level",
               "need 2 <= min_level <= max_level <= 8")
        _check(self.num_scales >= 1, "anchors.num_scales", "must be >= 1")
        _check(len(self.aspect_ratios) >= 1 and all(a > 0 for a in self.aspect_ratios),
               "anchors.aspect_ratios", "must be a non-empty list of positive numbers")

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    depth: int = 50
    norm: BackboneNorm = "frozen"
    width: int = 64  # channels of the stem; ResNet's standard is 64
    weights: Optional[str] = None  # None (from scratch) or "imagenet"
    freeze_stages: int = 0  # 0: none; 1: stem; 2: stem + stage 2 (paper with ImageNet weights)

    def __post_init__(self):
        _check(self.depth in (18, 34, 50, 101), "model.backbone.depth", "must be 18, 34, 50 or 101")
        _check(self.width >= 8 and self.width % 8 == 0, "model.backbone.width", "must be a multiple of 8")
        _check(self.weights in (None, "imagenet"), "model.backbone.weights", "must be null or 'imagenet'")
        if self.weights == "imagenet":
            _check(self.depth in (50, 101) and self.width == 64, "model.backbone.weights",
                   "'imagenet' weights exist for depth 50/101 at width 64 only")
        _check(0 <= self.freeze_stages <= 5, "model.backbone.freeze_stages", "must be in [0, 5]")


@dataclasses.dataclass(frozen=True)
class FPNConfig:
    channels: int = 256
    p6_from: P6From = "p5"
    group_norm: bool = False

    def __post_init__(self):
        _check(self.channels > 0, "model.fpn.channels", "must be > 0")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    num_convs: int = 4
    channels: int = 256
    group_norm: bool = False
    prior_prob: float = 0.01

    def __post_init__(self):
        _check(self.num_convs >= 0, "model.head.num_convs", "must be >= 0")
        _check(0.0 < self.prior_prob < 1.0, "model.head.prior_prob", "must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class MaskHeadConfig:
    """The mask branch (README, "Faithfulness to the released code"); ``enabled: false`` is RetinaNet with
    best matching and the self-adjusting loss, nothing else."""

    enabled: bool = True
    num_convs: int = 4
    channels: int = 256
    group_norm: bool = False
    roi_size: int = 14  # RoIAlign bins per side; masks are predicted at 2x this
    sampling_ratio: int = 2
    aligned: bool = False  # False: the released code's legacy RoIAlign
    min_level: int = 3
    max_level: int = 5
    canonical_level: int = 4
    canonical_size: float = 224.0
    proposal_iou: float = 0.5
    train_detections: int = 100  # detections per image used as training RoIs (+ all GT)
    # RoIs per image the mask head runs on in training, positives first; null: all
    # (the paper). Lossless while no image has more positives; drops are logged.
    max_train_rois: Optional[int] = None
    num_masks: int = 50  # masks predicted at inference (top detections)
    mask_threshold: float = 0.5
    loss_weight: float = 1.0
    gt_mask_size: int = 112  # cells per side of the stored box-frame GT masks

    def __post_init__(self):
        k = "model.mask_head."
        _check(self.num_convs >= 0, k + "num_convs", "must be >= 0")
        _check(self.channels > 0, k + "channels", "must be > 0")
        _check(self.roi_size > 0, k + "roi_size", "must be > 0")
        _check(self.sampling_ratio > 0, k + "sampling_ratio", "must be > 0")
        _check(self.min_level <= self.canonical_level <= self.max_level, k + "canonical_level",
               "must lie in [min_level, max_level]")
        _check(self.canonical_size > 0, k + "canonical_size", "must be > 0")
        _check(0.0 < self.proposal_iou <= 1.0, k + "proposal_iou", "must be in (0, 1]")
        _check(self.train_detections >= 0, k + "train_detections", "must be >= 0")
        _check(self.max_train_rois is None or self.max_train_rois >= 1, k + "max_train_rois",
               "must be null or >= 1")
        _check(self.num_masks >= 1, k + "num_masks", "must be >= 1")
        _check(0.0 < self.mask_threshold < 1.0, k + "mask_threshold", "must be in (0, 1)")
        _check(self.loss_weight >= 0.0, k + "loss_weight", "must be >= 0")
        _check(self.gt_mask_size >= 2 * self.roi_size, k + "gt_mask_size",
               "must be >= the predicted mask size 2 * roi_size")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    num_classes: Optional[int] = None  # None: taken from the dataset
    backbone: BackboneConfig = BackboneConfig()
    fpn: FPNConfig = FPNConfig()
    head: HeadConfig = HeadConfig()
    mask_head: MaskHeadConfig = MaskHeadConfig()

    def __post_init__(self):
        _check(self.num_classes is None or self.num_classes >= 1, "model.num_classes", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class MatcherConfig:
    positive_threshold: float = 0.5
    negative_threshold: float = 0.4
    best_match_threshold: Optional[float] = 0.0  # None: best matching off (plain RetinaNet)

    def __post_init__(self):
        _check(0.0 <= self.negative_threshold <= self.positive_threshold <= 1.0,
               "matcher.negative_threshold/positive_threshold", "need 0 <= negative <= positive <= 1")
        _check(self.best_match_threshold is None or 0.0 <= self.best_match_threshold < 1.0,
               "matcher.best_match_threshold", "must be null or in [0, 1)")


@dataclasses.dataclass(frozen=True)
class BoxCoderConfig:
    weights: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    scale_clip: float = math.log(1000.0 / 16.0)

    def __post_init__(self):
        _check(len(self.weights) == 4 and all(w > 0 for w in self.weights), "box_coder.weights",
               "must be 4 positive numbers (dy, dx, dh, dw weights)")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: BoxLoss = "self_adjusting"
    beta: float = 0.11  # fixed beta, or beta_hat for the self-adjusting loss
    beta_momentum: float = 0.9
    beta_min: float = 1e-3
    box_weight: float = 1.0

    def __post_init__(self):
        _check(0.0 <= self.focal_alpha <= 1.0, "loss.focal_alpha", "must be in [0, 1]")
        _check(self.focal_gamma >= 0.0, "loss.focal_gamma", "must be >= 0")
        _check(self.beta > 0.0, "loss.beta", "must be > 0")
        _check(0.0 <= self.beta_momentum < 1.0, "loss.beta_momentum", "must be in [0, 1)")
        _check(0.0 <= self.beta_min <= self.beta, "loss.beta_min", "must be in [0, loss.beta]")


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.05
    pre_nms_top_k: int = 1000
    nms_iou_threshold: float = 0.4
    max_detections: int = 100

    def __post_init__(self):
        _check(self.pre_nms_top_k > 0 and self.max_detections > 0,
               "postprocess.pre_nms_top_k/max_detections", "must be > 0")
        _check(0.0 < self.nms_iou_threshold <= 1.0, "postprocess.nms_iou_threshold", "must be in (0, 1]")
        _check(0.0 <= self.score_threshold < 1.0, "postprocess.score_threshold", "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # global batch, summed over replicas
    steps: int = 90000
    base_lr: float = 0.01
    warmup_steps: int = 500
    warmup_factor: float = 1.0 / 3.0
    lr_drop_steps: Tuple[int, ...] = (60000, 80000)
    lr_drop_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: Optional[float] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    summary_every: int = 50
    checkpoint_data_iterator: bool = False
    seed: int = 0
    # Keras dtype policy of the training model: mixed_float16 (with dynamic loss scaling)
    # or mixed_bfloat16 compute in 16 bits with float32 weights; the head outputs, losses,
    # beta statistics and post-processing stay float32. --mode=eval and export build float32.
    precision: Precision = "float32"
    # Compile the per-replica train step with XLA (static shapes; the step's NMS and crops
    # use their XLA-compilable forms, which give the same values).
    jit_compile: bool = False

    def __post_init__(self):
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.steps > 0, "train.steps", "must be > 0")
        _check(self.base_lr > 0, "train.base_lr", "must be > 0")
        _check(list(self.lr_drop_steps) == sorted(self.lr_drop_steps), "train.lr_drop_steps",
               "must be increasing")
        _check(self.checkpoint_every > 0, "train.checkpoint_every", "must be > 0")
        _check(self.summary_every > 0, "train.summary_every", "must be > 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 8
    max_images: Optional[int] = None  # None: the whole val split
    jit_compile: bool = False  # compile the evaluation's detection function with XLA


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = DataConfig()
    anchors: AnchorConfig = AnchorConfig()
    model: ModelConfig = ModelConfig()
    matcher: MatcherConfig = MatcherConfig()
    box_coder: BoxCoderConfig = BoxCoderConfig()
    loss: LossConfig = LossConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        stride = 2 ** self.anchors.max_level
        # The image is padded to a multiple of the coarsest stride; short_side must fit it.
        _check(self.data.short_side >= stride, "data.short_side",
               f"must be >= the coarsest stride 2^max_level = {stride}")
        if self.data.padded_size is not None:
            pad = self.data.pad_stride
            _check(all(v % pad == 0 for v in self.data.padded_size), "data.padded_size",
                   f"height and width must be multiples of data.pad_stride = {pad}")
        mh = self.model.mask_head
        _check(not (self.data.kind == "tfds" and mh.enabled), "model.mask_head.enabled",
               "TFDS detection datasets (data.kind=tfds, e.g. coco/2017) have boxes only, no "
               "instance masks, and the mask head trains on masks. Set "
               "model.mask_head.enabled=false (RetinaNet with best matching and the "
               "self-adjusting loss), or train RetinaMask from the COCO JSON with polygons "
               "(data.kind=coco with instances_train2017.json), or from TFRecords written from "
               "it (main.py --mode=make_tfrecords)")
        _check(self.anchors.min_level <= mh.min_level <= mh.max_level <= self.anchors.max_level,
               "model.mask_head.min_level",
               "mask levels must lie within [anchors.min_level, anchors.max_level]")

    @property
    def image_size(self) -> Tuple[int, int]:
        """Static (height, width) the parser pads every image to."""
        if self.data.padded_size is not None:
            return tuple(int(v) for v in self.data.padded_size)
        stride = self.data.pad_stride
        side = int(math.ceil(self.data.long_side / stride) * stride)
        return side, side


# --------------------------------------------------------------------------- loading


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Converts a YAML value to the annotated type, or raises ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_convert(v, item, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e3, 2.0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {hint!r} for '{key}'")


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {sorted(names)})")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': {e}") from e


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(config) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 with two of YAML 1.2's rules: the float forms 1.1 reads as strings
    (``1e-4``, ``1E5``, ``+2e3``: 1.1 wants a dot in the mantissa), and booleans only
    ``true``/``false`` (1.1 also reads ``on``/``off``/``yes``/``no`` as booleans, so that
    ``data.verify_images: off`` became ``False``)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml_load(stream):
    return yaml.load(stream, Loader=_Loader)


def parse_override(text: str) -> dict:
    """``'a.b.c=value'`` -> ``{'a': {'b': {'c': value}}}`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    value = _yaml_load(raw) if raw.strip() else None
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(paths=(), overrides=(), base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Builds the experiment config: defaults <- each YAML file in order <- overrides.

    Args:
      paths: YAML files; later files win.
      overrides: strings ``dotted.key=yaml_value``; applied last.
      base: config to start from (default: the dataclass defaults).
    Raises:
      ConfigError: an unknown key, a wrong type or an invalid value, naming the key
        (and the file, for YAML errors).
    """
    values = to_dict(base or ExperimentConfig())
    for path in paths:
        try:
            with open(path) as f:
                loaded = _yaml_load(f) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} "
                              f"at offset {e.start})") from e
        except OSError as e:  # a folder, no permission, ...
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        try:
            _build(ExperimentConfig, _merge(values, loaded))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        values = _merge(values, loaded)
    for text in overrides:
        values = _merge(values, parse_override(text))
    return _build(ExperimentConfig, values)


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def replace(config, **changes):
    """``dataclasses.replace`` with dotted keys: ``replace(cfg, **{'model.num_classes': 3})``."""
    nested: dict = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        nested.setdefault(head, {})
        if rest:
            nested[head][rest] = value
        else:
            nested[head] = value
    kwargs = {}
    for head, value in nested.items():
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(config, head)):
            kwargs[head] = replace(getattr(config, head), **value)
        else:
            kwargs[head] = value
    return dataclasses.replace(config, **kwargs)
