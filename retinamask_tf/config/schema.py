"""The experiment config's schema: frozen dataclasses, one per section, each key with its
type, default, documentation (``docs/config.md`` is generated from it) and check.

A check failing raises ``ConfigError`` naming the dotted key. The loader
(``config.loader``) reads YAML files and ``key=value`` overrides into these classes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional, Tuple

BackboneNorm = Literal["frozen", "batch_norm", "sync_batch_norm", "group_norm"]
DatasetKind = Literal["builtin", "coco", "tfds"]
CrowdMode = Literal["drop", "ignore"]
VerifyImages = Literal["full", "header", "off"]
BoxLoss = Literal["self_adjusting", "smooth_l1"]
P6From = Literal["c5", "p5"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
AnchorStyle = Literal["exact", "released", "torchvision"]
ConvPadding = Literal["same", "symmetric"]
InputNorm = Literal["auto", "imagenet", "caffe", "detectron_caffe", "inception"]
BackboneName = Literal["resnet", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
ConvAlgorithm = Literal["auto", "direct", "winograd"]
PadValue = Literal["black", "mean"]
ClsNormalizer = Literal["positives", "positives_plus_images"]


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key."""


def _check(ok, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def f(default, doc: str):
    """A config key: its default and one or two sentences for ``docs/config.md``."""
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class BuiltinDataConfig:
    """The generated shapes dataset (``data.kind: builtin``): coloured shapes with masks."""

    num_train: int = f(1600, "Training images.")
    num_val: int = f(200, "Validation images.")
    image_size: int = f(256, "Side of the square images, pixels.")
    max_objects: int = f(15, "Most shapes per image.")
    min_object_size: float = f(12.0, "Smallest shape side, pixels.")
    seed: int = f(0, "Seed of the generator: the same seed gives the same files.")
    cache_dir: str = f("~/.cache/retinamask_tf", "Where the generated dataset is written "
                       "(once; later runs reuse it).")

    def __post_init__(self):
        k = "data.builtin."
        _check(self.num_train > 0 and self.num_val > 0, k + "num_train/num_val", "must be > 0")
        _check(self.image_size >= 64, k + "image_size", "must be >= 64")
        _check(1 <= self.max_objects <= 100, k + "max_objects", "must be in [1, 100]")
        _check(0 < self.min_object_size < self.image_size, k + "min_object_size",
               "must be in (0, data.builtin.image_size)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input data and the parser (resize, flip, pad)."""

    kind: DatasetKind = f("builtin", "builtin: the generated shapes; coco: a COCO instances "
                          "JSON + image folder per split; tfds: a TFDS detection builder.")
    train_json: Optional[str] = f(None, "Training annotations (COCO instances JSON).")
    train_images: Optional[str] = f(None, "Folder the training JSON's file_name are relative to.")
    val_json: Optional[str] = f(None, "Validation annotations (COCO instances JSON).")
    val_images: Optional[str] = f(None, "Folder the validation JSON's file_name are relative to.")
    builtin: BuiltinDataConfig = BuiltinDataConfig()
    short_side: int = f(800, "Images are resized so that their short side is this ...")
    long_side: int = f(1333, "... unless their long side would exceed this.")
    max_instances: int = f(100, "Annotation rows per image; images with more keep their "
                           "largest boxes (named in the log).")
    hflip: bool = f(True, "Random horizontal flips in training.")
    crowd: CrowdMode = f("drop", "Crowd annotations: drop (the released code) or ignore "
                         "(anchors inside them are neither positive nor negative).")
    shuffle_buffer: int = f(1024, "Training shuffle buffer (examples).")
    num_parallel_calls: int = f(-1, "Parallel image decoding; -1: tf.data.AUTOTUNE.")
    verify_images: VerifyImages = f("full", "Start-up check of the image files: full decodes "
                                    "each once, header reads headers only (very large "
                                    "datasets), off trusts the files.")
    train_short_sides: Optional[Tuple[int, ...]] = f(
        None, "Multi-scale training: each training image's short side is drawn from this "
        "list (long side still capped at long_side); null: always short_side. Evaluation and "
        "export use short_side.")
    scale_jitter: Optional[Tuple[float, float]] = f(
        None, "Scale jitter: each training image's scale is multiplied by a factor drawn "
        "uniformly from [low, high] (the image still fits the padded size); null: off.")
    padded_size: Optional[Tuple[int, int]] = f(
        None, "Static padded (height, width); null: a square of long_side rounded up to "
        "pad_stride. A landscape size such as [896, 1408] for 800x1333 saves the square's "
        "unused rows; images that do not fit are scaled down to fit (aspect kept).")
    pad_value: PadValue = f("black", "What the padding around a resized image holds: black "
                            "(0 before normalisation) or mean (the normalisation's mean pixel: "
                            "0 after it, as PyTorch detectors pad). Imported weights use mean.")
    pad_stride: int = f(128, "Padded sizes are multiples of this: 128 (the P7 stride) is the "
                        "released code's; any multiple of 32 works (P6/P7 take ceil(size / "
                        "stride) cells): 32 pads 800x1333 to 800x1344 as torchvision does.")
    train_tfrecord: Optional[str] = f(
        None, "A -meta.json written by --mode=make_tfrecords: training reads these TFRecords "
        "instead of train_json/train_images (val stays JSON: COCO evaluation needs it).")
    image_check_cache: Optional[str] = f("~/.cache/retinamask_tf", "Where the image check's "
                                         "results are cached; null: no cache.")
    tfds_name: Optional[str] = f(None, "kind tfds: the builder, e.g. coco/2017 (boxes only: "
                                 "the mask head must be off).")
    tfds_data_dir: Optional[str] = f(None, "kind tfds: TFDS data folder; null: TFDS's default.")
    tfds_train_split: str = f("train", "kind tfds: the training split.")
    tfds_val_split: str = f("validation", "kind tfds: the val split, written once as COCO JSON "
                            "+ images (unless val_json/val_images are given).")
    tfds_val_dir: Optional[str] = f(None, "kind tfds: where that val split is written; null: "
                                    "<image_check_cache>/tfds/<name>/<split>.")

    def __post_init__(self):
        _check(self.short_side > 0 and self.long_side >= self.short_side,
               "data.short_side/long_side", "need 0 < short_side <= long_side")
        _check(self.max_instances > 0, "data.max_instances", "must be > 0")
        _check(self.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1")
        _check(self.num_parallel_calls == -1 or self.num_parallel_calls >= 1,
               "data.num_parallel_calls", "must be -1 (autotune) or >= 1")
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
        if self.kind == "coco":  # each split's JSON and images together; training and
            # evaluation say which split they need when it is missing (data.pipeline)
            for split in ("train", "val"):
                _check(bool(getattr(self, f"{split}_json")) == bool(getattr(self, f"{split}_images")),
                       f"data.{split}_json/{split}_images", "give both or neither")
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

    min_level: int = f(3, "Finest pyramid level (P3: stride 8).")
    max_level: int = f(7, "Coarsest pyramid level (P7: stride 128).")
    num_scales: int = f(3, "Anchor sizes per octave.")
    aspect_ratios: Tuple[float, ...] = f((0.5, 1.0, 2.0), "Height/width ratios of the anchors.")
    anchor_scale: float = f(4.0, "Base anchor size in strides (4: 32 px on P3).")
    style: AnchorStyle = f("exact", "exact: sizes and centres as the formula says; released: "
                           "the released RetinaMask generator (ratio applied to a stride-sized "
                           "cell with rounding, then scaled: up to 6% off on P3/P4); "
                           "torchvision: integer sizes, rounded half-sides, centred on the "
                           "cell's corner. Imported weights need their source's style.")

    def __post_init__(self):
        _check(2 <= self.min_level <= self.max_level <= 8, "anchors.min_level/max_level",
               "need 2 <= min_level <= max_level <= 8")
        _check(self.num_scales >= 1, "anchors.num_scales", "must be >= 1")
        _check(len(self.aspect_ratios) >= 1 and all(a > 0 for a in self.aspect_ratios),
               "anchors.aspect_ratios", "must be a non-empty list of positive numbers")
        _check(self.anchor_scale > 0, "anchors.anchor_scale", "must be > 0")

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """The backbone: C3-C5 at strides 8, 16, 32 for the FPN."""

    name: BackboneName = f("resnet", "resnet (our ResNet-18/34/50/101, or Keras' ImageNet "
                           "ResNet-50/101), or a Keras applications MobileNet: "
                           "mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small.")
    alpha: float = f(1.0, "MobileNets: the width multiplier (1.0: the standard widths).")
    minimalistic: bool = f(False, "MobileNetV3: Keras' minimalistic variant (no squeeze-excite, "
                           "ReLU instead of hard-swish, 3x3 kernels), the int8 phone backbone: "
                           "XNNPACK runs int8 hard-swish outside its graph (docs/mobile.md).")
    depth: int = f(50, "ResNet: 18, 34, 50 or 101.")
    norm: BackboneNorm = f("frozen", "frozen (BatchNorm with fixed statistics, the paper with "
                           "ImageNet weights), batch_norm, sync_batch_norm or group_norm.")
    width: int = f(64, "Channels of the stem; ResNet's standard is 64 (smaller for tiny models).")
    weights: Optional[str] = f(None, "null (from scratch) or imagenet (Keras' ResNet weights; "
                               "depth 50/101, width 64; downloaded once, needs internet).")
    freeze_stages: int = f(0, "0: none; 1: stem; 2: stem + stage 2 (the paper with ImageNet "
                           "weights).")
    stride_in_1x1: bool = f(False, "Bottlenecks downsample in their first 1x1 conv (ResNet v1, "
                            "the MSRA weights of the released code) instead of the 3x3 (v1.5, "
                            "torchvision).")

    def __post_init__(self):
        _check(self.depth in (18, 34, 50, 101), "model.backbone.depth", "must be 18, 34, 50 or 101")
        _check(self.width >= 8 and self.width % 8 == 0, "model.backbone.width", "must be a multiple of 8")
        _check(self.weights in (None, "imagenet"), "model.backbone.weights", "must be null or 'imagenet'")
        _check(not (self.stride_in_1x1 and self.weights == "imagenet"), "model.backbone.stride_in_1x1",
               "Keras' ImageNet ResNets are fixed: stride_in_1x1 needs model.backbone.weights: null")
        if self.weights == "imagenet" and self.name == "resnet":
            _check(self.depth in (50, 101) and self.width == 64, "model.backbone.weights",
                   "'imagenet' weights exist for depth 50/101 at width 64 only")
        _check(0 <= self.freeze_stages <= 5, "model.backbone.freeze_stages", "must be in [0, 5]")
        _check(self.alpha > 0, "model.backbone.alpha", "must be > 0")
        if self.name != "resnet":  # the MobileNets: Keras applications architectures
            _check(self.norm in ("batch_norm", "frozen"), "model.backbone.norm",
                   f"{self.name} has batch norms: batch_norm or frozen")
            _check(self.freeze_stages == 0 and not self.stride_in_1x1,
                   "model.backbone.freeze_stages/stride_in_1x1", f"ResNet keys: not for {self.name}")
            _check(not self.minimalistic or self.name.startswith("mobilenet_v3"),
                   "model.backbone.minimalistic", f"is a MobileNetV3 key, not for {self.name}")
            if self.weights == "imagenet":
                widths = ((0.35, 0.5, 0.75, 1.0, 1.3, 1.4) if self.name == "mobilenet_v2"
                          else (1.0,) if self.minimalistic else (0.75, 1.0))
                _check(self.alpha in widths, "model.backbone.alpha",
                       f"Keras has ImageNet weights of {self.name}"
                       f"{' (minimalistic)' if self.minimalistic else ''} at widths "
                       f"{', '.join(map(str, widths))} only")
        else:
            _check(self.alpha == 1.0, "model.backbone.alpha", "is a MobileNet key: leave it "
                   "at 1.0 for resnet (model.backbone.width sets ResNet's stem)")
            _check(not self.minimalistic, "model.backbone.minimalistic",
                   "is a MobileNetV3 key, not for resnet")


@dataclasses.dataclass(frozen=True)
class FPNConfig:
    """The feature pyramid."""

    channels: int = f(256, "Channels of every pyramid level.")
    p6_from: P6From = f("p5", "P6 from P5 (the released RetinaMask code) or from C5 "
                        "(Detectron's RetinaNet).")
    group_norm: bool = f(False, "GroupNorm after the FPN convolutions.")
    separable: bool = f(False, "Depthwise-separable 3x3 convolutions (3x3 depthwise, then 1x1): "
                        "the light neck of mobile detectors.")

    def __post_init__(self):
        _check(self.channels > 0, "model.fpn.channels", "must be > 0")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The class and box heads (shared over levels)."""

    num_convs: int = f(4, "3x3 convolutions in each tower.")
    channels: int = f(256, "Channels of those convolutions.")
    group_norm: bool = f(False, "GroupNorm in the towers.")
    batch_norm: bool = f(False, "BatchNorm in the towers, one per pyramid level (the convs are "
                         "shared, the statistics not, as EfficientDet); it folds into the "
                         "convs at export.")
    separable: bool = f(False, "Depthwise-separable 3x3 convolutions in the towers and "
                        "predictors (3x3 depthwise, then 1x1): SSDLite's light heads.")
    prior_prob: float = f(0.01, "Initial foreground probability of the class head's bias.")

    def __post_init__(self):
        _check(not (self.group_norm and self.batch_norm), "model.head.group_norm/batch_norm",
               "choose one norm for the towers")
        _check(self.num_convs >= 0, "model.head.num_convs", "must be >= 0")
        _check(self.channels > 0, "model.head.channels", "must be > 0")
        _check(0.0 < self.prior_prob < 1.0, "model.head.prior_prob", "must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class MaskHeadConfig:
    """The mask branch; ``enabled: false`` is RetinaNet with best matching and the
    self-adjusting loss, nothing else."""

    enabled: bool = f(True, "Train (and optionally export) the mask branch.")
    num_convs: int = f(4, "3x3 convolutions before the upsampling.")
    channels: int = f(256, "Channels of those convolutions.")
    group_norm: bool = f(False, "GroupNorm after them.")
    roi_size: int = f(14, "RoIAlign bins per side; masks are predicted at 2x this.")
    sampling_ratio: int = f(2, "RoIAlign samples per bin side.")
    aligned: bool = f(False, "false: the released code's legacy RoIAlign (no half-pixel "
                      "shift); true: aligned RoIAlign.")
    min_level: int = f(3, "Finest level RoIs are pooled from.")
    max_level: int = f(5, "Coarsest level RoIs are pooled from.")
    canonical_level: int = f(4, "Level of an RoI of canonical_size.")
    canonical_size: float = f(224.0, "RoI size mapped to canonical_level.")
    proposal_iou: float = f(0.5, "IoU with a ground-truth box at which a training RoI is "
                            "positive.")
    train_detections: int = f(100, "Detections per image used as training RoIs (+ all GT); "
                              "0: GT boxes only.")
    max_train_rois: Optional[int] = f(None, "At most this many RoIs per image in training, "
                                      "positives first; null: no cap (the paper). Lossless "
                                      "while no image has more positives; drops are logged. "
                                      "Without XLA the head runs only on the batch's largest "
                                      "positive count anyway; with XLA (static shapes) it "
                                      "runs on this many (or every) slot.")
    num_masks: int = f(50, "Masks predicted at inference (the top detections).")
    mask_threshold: float = f(0.5, "Probability at which a mask pixel is inside.")
    loss_weight: float = f(1.0, "Weight of the mask loss in the total.")
    gt_mask_size: int = f(112, "Cells per side of the stored box-frame GT masks.")
    box_plus_one: bool = f(False, "RoIs reach RoIAlign as the released code's \"+1\" boxes "
                           "(bottom/right edge 1 px inside): what its mask weights saw.")

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
    """The network."""

    num_classes: Optional[int] = f(None, "Classes; null: taken from the dataset.")
    conv_padding: ConvPadding = f("same", "Padding of the strided convs and the stem's max-pool "
                                  "(backbone, P6/P7): same (TensorFlow: bottom/right only on "
                                  "even inputs) or symmetric (PyTorch: every side). Imported "
                                  "PyTorch weights need symmetric.")
    input_norm: InputNorm = f("auto", "Pixel normalisation inside the model: imagenet (RGB, "
                              "ImageNet mean/std; torchvision), caffe (BGR minus Keras' mean), "
                              "detectron_caffe (BGR minus 102.98/115.95/122.77, the released "
                              "code); auto: caffe with backbone.weights imagenet, else imagenet.")
    conv_algorithm: ConvAlgorithm = f(
        "auto", "How the 3x3 stride-1 convs of our ResNet, the FPN and the heads compute "
        "(same weights, results equal to ~1e-5): direct, winograd (F(4x4, 3x3): 4x fewer "
        "multiplies, float32 only), or auto: winograd on a CPU for float32 layers of >= 128 "
        "channels and >= 2^18 outputs per image, where it is faster than oneDNN's direct "
        "conv; direct on GPUs.")
    backbone: BackboneConfig = BackboneConfig()
    fpn: FPNConfig = FPNConfig()
    head: HeadConfig = HeadConfig()
    mask_head: MaskHeadConfig = MaskHeadConfig()

    def __post_init__(self):
        _check(self.num_classes is None or self.num_classes >= 1, "model.num_classes", "must be >= 1")
        _check(not (self.conv_padding == "symmetric" and self.backbone.weights == "imagenet"),
               "model.conv_padding", "Keras' ImageNet ResNets and MobileNets use TF padding: "
               "symmetric needs "
               "model.backbone.weights: null")


@dataclasses.dataclass(frozen=True)
class MatcherConfig:
    """Anchor matching."""

    positive_threshold: float = f(0.5, "IoU at or above which an anchor is positive.")
    negative_threshold: float = f(0.4, "IoU below which an anchor is negative (between: "
                                  "ignored).")
    best_match_threshold: Optional[float] = f(
        0.0, "RetinaMask's best matching: every GT box also gets its best anchor(s) as "
        "positives when their IoU exceeds this; null: off (plain RetinaNet).")

    def __post_init__(self):
        _check(0.0 <= self.negative_threshold <= self.positive_threshold <= 1.0,
               "matcher.negative_threshold/positive_threshold", "need 0 <= negative <= positive <= 1")
        _check(self.best_match_threshold is None or 0.0 <= self.best_match_threshold < 1.0,
               "matcher.best_match_threshold", "must be null or in [0, 1)")


@dataclasses.dataclass(frozen=True)
class BoxCoderConfig:
    """Box regression targets."""

    weights: Tuple[float, float, float, float] = f((10.0, 10.0, 5.0, 5.0),
                                                   "(dy, dx, dh, dw) target weights.")
    scale_clip: float = f(math.log(1000.0 / 16.0), "Largest decoded log size change "
                          "(log(1000/16)).")

    def __post_init__(self):
        _check(len(self.weights) == 4 and all(w > 0 for w in self.weights), "box_coder.weights",
               "must be 4 positive numbers (dy, dx, dh, dw weights)")
        _check(self.scale_clip > 0, "box_coder.scale_clip", "must be > 0")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The detection losses."""

    focal_alpha: float = f(0.25, "Focal loss alpha.")
    focal_gamma: float = f(2.0, "Focal loss gamma.")
    box_loss: BoxLoss = f("self_adjusting", "self_adjusting (RetinaMask) or smooth_l1 (fixed "
                          "beta, RetinaNet).")
    beta: float = f(0.11, "Fixed beta, or the self-adjusting loss's upper bound beta_hat.")
    beta_momentum: float = f(0.9, "Momentum of the running mean/variance of |x|.")
    beta_min: float = f(1e-3, "Lower bound of the self-adjusting beta.")
    box_weight: float = f(1.0, "Weight of the box loss in the total.")
    cls_normalizer: ClsNormalizer = f("positives", "The focal loss sum is divided by the number "
                                      "of positive anchors (at least 1), or by positives plus "
                                      "images (the released code).")

    def __post_init__(self):
        _check(0.0 <= self.focal_alpha <= 1.0, "loss.focal_alpha", "must be in [0, 1]")
        _check(self.focal_gamma >= 0.0, "loss.focal_gamma", "must be >= 0")
        _check(self.beta > 0.0, "loss.beta", "must be > 0")
        _check(0.0 <= self.beta_momentum < 1.0, "loss.beta_momentum", "must be in [0, 1)")
        _check(0.0 <= self.beta_min <= self.beta, "loss.beta_min", "must be in [0, loss.beta]")
        _check(self.box_weight >= 0.0, "loss.box_weight", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Detection post-processing (inference and the mask branch's training RoIs)."""

    score_threshold: float = f(0.05, "Candidates below this score are dropped before NMS.")
    pre_nms_top_k: int = f(1000, "Candidates kept per level before NMS.")
    nms_iou_threshold: float = f(0.4, "Per-class NMS IoU.")
    max_detections: int = f(100, "Detections per image.")
    keep_empty_boxes: bool = f(False, "Keep candidates whose box, clipped to the image, has no "
                               "area (torchvision does; they can only be false positives). "
                               "TFLite files and the OpenVINO IR always drop them.")

    def __post_init__(self):
        _check(self.pre_nms_top_k > 0 and self.max_detections > 0,
               "postprocess.pre_nms_top_k/max_detections", "must be > 0")
        _check(0.0 < self.nms_iou_threshold <= 1.0, "postprocess.nms_iou_threshold", "must be in (0, 1]")
        _check(0.0 <= self.score_threshold < 1.0, "postprocess.score_threshold", "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpoints and logging."""

    batch_size: int = f(16, "Global batch, summed over replicas.")
    steps: int = f(90000, "Optimizer steps.")
    base_lr: float = f(0.01, "Learning rate after warm-up (SGD).")
    warmup_steps: int = f(500, "Linear warm-up steps (below train.steps).")
    warmup_factor: float = f(1.0 / 3.0, "Warm-up starts at base_lr times this.")
    lr_drop_steps: Tuple[int, ...] = f((60000, 80000), "Steps at which the rate is multiplied "
                                       "by lr_drop_factor; each below train.steps (a drop "
                                       "at or past the end is refused with the drops scaled "
                                       "to the run).")
    lr_drop_factor: float = f(0.1, "Factor of each drop.")
    momentum: float = f(0.9, "SGD momentum.")
    weight_decay: float = f(1e-4, "Decoupled weight decay (not on biases and norm "
                            "parameters).")
    clip_grad_norm: Optional[float] = f(None, "Clip the global gradient norm to this; null: "
                                        "off.")
    checkpoint_every: int = f(1000, "Steps between checkpoints (and at the end).")
    keep_checkpoints: int = f(3, "Checkpoints kept.")
    summary_every: int = f(50, "Steps between TensorBoard summaries.")
    checkpoint_data_iterator: bool = f(False, "Checkpoint the input pipeline's position too "
                                       "(exact resume; larger checkpoints).")
    seed: int = f(0, "Seed of the weights, the shuffling and the augmentation.")
    precision: Precision = f("float32", "Keras dtype policy of the training model: "
                             "mixed_float16 (with dynamic loss scaling) or mixed_bfloat16 "
                             "compute in 16 bits with float32 weights; losses, beta statistics "
                             "and post-processing stay float32. Evaluation and export are "
                             "float32 (--saved_model_precision=bfloat16 exports bfloat16).")
    jit_compile: bool = f(False, "Compile the per-replica train step with XLA (the step's NMS "
                          "and crops use their XLA-compilable forms: the same values).")

    def __post_init__(self):
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.steps > 0, "train.steps", "must be > 0")
        _check(self.base_lr > 0, "train.base_lr", "must be > 0")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _check(0.0 < self.warmup_factor <= 1.0, "train.warmup_factor", "must be in (0, 1]")
        _check(list(self.lr_drop_steps) == sorted(self.lr_drop_steps)
               and all(s > 0 for s in self.lr_drop_steps), "train.lr_drop_steps",
               "must be increasing positive steps")
        _check(0.0 < self.lr_drop_factor <= 1.0, "train.lr_drop_factor", "must be in (0, 1]")
        # A schedule that cannot happen within train.steps is refused, with the numbers.
        _check(self.warmup_steps < self.steps or self.warmup_steps == 0, "train.warmup_steps",
               f"{self.warmup_steps} is not below train.steps={self.steps}: the rate would "
               "never reach train.base_lr; set a shorter warm-up")
        late = [s for s in self.lr_drop_steps if s >= self.steps]
        if late:
            total = max(self.lr_drop_steps[-1] * 9 // 8, 1)  # a schedule's drops end ~8/9 in
            scaled = [max(1, round(s * self.steps / total)) for s in self.lr_drop_steps]
            _check(False, "train.lr_drop_steps",
                   f"{list(self.lr_drop_steps)} has drops at {late}, not below "
                   f"train.steps={self.steps}: the rate would never drop there. Set drops "
                   f"within the run, e.g. train.lr_drop_steps={scaled} (the same fractions "
                   "of this run), or [] for a constant rate")
        _check(0.0 <= self.momentum < 1.0, "train.momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0.0, "train.weight_decay", "must be >= 0")
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0, "train.clip_grad_norm",
               "must be null or > 0")
        _check(self.checkpoint_every > 0, "train.checkpoint_every", "must be > 0")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        _check(self.summary_every > 0, "train.summary_every", "must be > 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """COCO evaluation."""

    batch_size: int = f(8, "Images per evaluation batch.")
    max_images: Optional[int] = f(None, "Score only the first N val images (a quick look; "
                                  "written as metrics_<step>_first<N>.json); null: all.")
    jit_compile: bool = f(False, "Compile the evaluation's detection function with XLA.")

    def __post_init__(self):
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(self.max_images is None or self.max_images >= 1, "eval.max_images",
               "must be null or >= 1")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs; written to MODEL_DIR/config.yaml."""

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
