"""The checkpoints ``--mode=import_weights`` reads, and the config each needs.

A source's ``conventions`` are the config keys under which our model computes what the
source's model computes (docs/weights.md gives each key's measured effect); they are
applied after the user's config files, so a fine-tuning config keeps them. ``coco`` are
the defaults of an import without a config: COCO's 80 classes, COCO-sized images.
"""

import dataclasses
from typing import Tuple

_TORCH_COMMON = (
    "data.pad_value=mean",
    "model.conv_padding=symmetric",
    "model.input_norm=imagenet",
    "model.backbone.name=resnet",
    "model.backbone.alpha=1.0",
    "model.backbone.minimalistic=false",
    "model.backbone.stride_in_1x1=false",
    "model.backbone.weights=null",
    "model.backbone.width=64",
)
_DETECTOR_COMMON = (
    "model.backbone.norm=frozen",
    "model.fpn.channels=256",
    "model.fpn.separable=false",
    "model.head.num_convs=4",
    "model.head.channels=256",
    "model.head.separable=false",
    "model.head.batch_norm=false",
    "anchors.min_level=3",
    "anchors.max_level=7",
    "anchors.num_scales=3",
    "anchors.aspect_ratios=[0.5,1.0,2.0]",
    "anchors.anchor_scale=4.0",
)
_TORCHVISION_DETECTOR = _TORCH_COMMON + _DETECTOR_COMMON + (
    "anchors.style=torchvision",
    "box_coder.weights=[1.0,1.0,1.0,1.0]",
    "postprocess.score_threshold=0.05",
    "postprocess.pre_nms_top_k=1000",
    "postprocess.nms_iou_threshold=0.5",
    "postprocess.max_detections=300",
    "postprocess.keep_empty_boxes=true",
)
_COCO = ("data.kind=coco", "model.num_classes=80", "data.short_side=800", "data.long_side=1333")


@dataclasses.dataclass(frozen=True)
class Source:
    """One kind of checkpoint."""

    name: str
    description: str
    conventions: Tuple[str, ...]  # key=value overrides applied after the user's config
    coco: Tuple[str, ...]  # defaults of an import without a config
    detector: bool  # has class/box heads (else a backbone only)
    has_masks: bool  # has a mask head
    class_channels: str  # "position": COCO class k is channel k; "category_id": channel id
    backbone: str = "resnet"  # the backbone family its keys describe (convert.BACKBONE_SLOTS)


SOURCES = {
    "retinamask": Source(
        "retinamask",
        "the released RetinaMask code's checkpoints (maskrcnn-benchmark state dicts, "
        "R-50/R-101-FPN)",
        conventions=(
            "data.pad_value=mean",
            "model.conv_padding=symmetric",
            "model.input_norm=detectron_caffe",
            "model.backbone.name=resnet",
            "model.backbone.alpha=1.0",
            "model.backbone.minimalistic=false",
            "model.backbone.stride_in_1x1=true",
            "model.backbone.weights=null",
            "model.backbone.width=64",
            "model.fpn.p6_from=p5",
            "model.fpn.group_norm=false",
            "model.fpn.separable=false",
            "model.head.group_norm=false",
            "model.head.separable=false",
            "model.head.batch_norm=false",
            "anchors.style=released",
            "box_coder.weights=[10.0,10.0,5.0,5.0]",
            "postprocess.score_threshold=0.05",
            "postprocess.pre_nms_top_k=1000",
            "postprocess.nms_iou_threshold=0.4",
            "postprocess.max_detections=100",
            "model.mask_head.num_convs=4",
            "model.mask_head.channels=256",
            "model.mask_head.group_norm=false",
            "model.mask_head.roi_size=14",
            "model.mask_head.sampling_ratio=2",
            "model.mask_head.aligned=false",
            "model.mask_head.min_level=3",
            "model.mask_head.max_level=5",
            "model.mask_head.box_plus_one=true",
            "loss.cls_normalizer=positives_plus_images",
            "loss.focal_alpha=0.25",
            "loss.focal_gamma=2.0",
            "loss.box_loss=self_adjusting",
            "loss.beta=0.11",
            "loss.beta_momentum=0.9",
            "loss.beta_min=0.001",
        ) + _DETECTOR_COMMON,
        coco=_COCO + ("model.mask_head.enabled=true",),
        detector=True, has_masks=True, class_channels="position"),
    "torchvision_retinanet": Source(
        "torchvision_retinanet",
        "torchvision's retinanet_resnet50_fpn (COCO_V1 weights)",
        conventions=_TORCHVISION_DETECTOR + ("model.fpn.p6_from=p5", "model.fpn.group_norm=false",
                                             "model.head.group_norm=false"),
        coco=_COCO + ("model.mask_head.enabled=false",),
        detector=True, has_masks=False, class_channels="category_id"),
    "torchvision_retinanet_v2": Source(
        "torchvision_retinanet_v2",
        "torchvision's retinanet_resnet50_fpn_v2 (COCO_V1 weights)",
        conventions=_TORCHVISION_DETECTOR + ("model.fpn.p6_from=c5", "model.fpn.group_norm=false",
                                             "model.head.group_norm=true"),
        coco=_COCO + ("model.mask_head.enabled=false",),
        detector=True, has_masks=False, class_channels="category_id"),
    "torchvision_resnet": Source(
        "torchvision_resnet",
        "torchvision's ImageNet ResNet-18/34/50/101 (backbone initialisation)",
        conventions=_TORCH_COMMON,
        coco=(),
        detector=False, has_masks=False, class_channels="position"),
    "torchvision_mobilenet_v3": Source(
        "torchvision_mobilenet_v3",
        "torchvision's ImageNet mobilenet_v3_large / mobilenet_v3_small (backbone "
        "initialisation)",
        conventions=("data.pad_value=mean", "model.conv_padding=symmetric",
                     "model.input_norm=imagenet", "model.backbone.weights=null",
                     "model.backbone.minimalistic=false"),
        coco=(),
        detector=False, has_masks=False, class_channels="position", backbone="mobilenet_v3"),
}


def get(name):
    """The ``Source`` called ``name``; ValueError listing the known ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown weights source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]
