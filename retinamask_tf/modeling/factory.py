"""Builds the model from an ``ExperimentConfig`` out of its parts: the one place that reads
the model's config."""

import keras

from retinamask_tf.config import ExperimentConfig
from retinamask_tf.layers.anchor_generator import AnchorGenerator
from retinamask_tf.layers.detection_generator import DetectionGenerator
from retinamask_tf.layers.roi_aligner import RoIAligner
from retinamask_tf.layers.target_assigner import TargetAssigner
from retinamask_tf.losses.focal import FocalLoss
from retinamask_tf.losses.registry import build_box_loss
from retinamask_tf.modeling.fpn import FPN
from retinamask_tf.modeling.heads import RetinaNetHead
from retinamask_tf.modeling.mask_branch import MaskBranch
from retinamask_tf.modeling.mask_head import MaskHead
from retinamask_tf.modeling.backbones import build_backbone
from retinamask_tf.modeling.retinamask import RetinaMask
from retinamask_tf.ops import pixels


def build_model(config: ExperimentConfig, num_classes: int = None, image_size=None,
                dtype_policy: str = None) -> RetinaMask:
    """The RetinaMask model for ``config``; ``num_classes`` overrides model.num_classes,
    ``image_size`` (static (h, w), multiples of 2^max_level) the config's padded size.

    The model is built (variables created) on that static image size. ``dtype_policy``
    (``mixed_float16``, ``mixed_bfloat16``, ...): the Keras dtype policy its layers are
    built under and keep; the global policy is restored afterwards, so models built later
    in the process get the default one.
    """
    if dtype_policy is None:
        return _build(config, num_classes, image_size)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:
        return _build(config, num_classes, image_size)
    finally:
        keras.config.set_dtype_policy(previous)


def _build(config, num_classes, image_size):
    num_classes = num_classes or config.model.num_classes
    if not num_classes:
        raise ValueError("model.num_classes is unknown: set it in the config or pass the "
                         "dataset's number of classes")
    m, a = config.model, config.anchors
    backbone = build_backbone(m)
    normalization = pixels.resolve_norm(m.input_norm, m.backbone)
    fpn = FPN(m.fpn.channels, m.fpn.p6_from, m.fpn.group_norm, a.min_level, a.max_level,
              padding=m.conv_padding, conv_algorithm=m.conv_algorithm,
              separable=m.fpn.separable, name="fpn")
    head = RetinaNetHead(num_classes, a.num_anchors, m.head.num_convs, m.head.channels,
                         m.head.group_norm, m.head.prior_prob, a.min_level, a.max_level,
                         conv_algorithm=m.conv_algorithm, separable=m.head.separable,
                         batch_norm=m.head.batch_norm, name="head")
    generator = DetectionGenerator(config.postprocess, config.box_coder,
                                   name="detection_generator")
    mh = m.mask_head
    mask_branch = None
    if mh.enabled:
        mask_branch = MaskBranch(
            RoIAligner(mh.roi_size, mh.sampling_ratio, mh.aligned, mh.min_level, mh.max_level,
                       mh.canonical_level, mh.canonical_size, box_plus_one=mh.box_plus_one,
                       name="roi_aligner"),
            MaskHead(num_classes, mh.num_convs, mh.channels, mh.group_norm, name="mask_head"),
            proposal_iou=mh.proposal_iou, train_detections=mh.train_detections,
            num_masks=mh.num_masks, loss_weight=mh.loss_weight,
            max_train_rois=mh.max_train_rois, name="mask_branch")
    loss, mc = config.loss, config.matcher
    model = RetinaMask(
        backbone, fpn, head,
        anchor_generator=AnchorGenerator(a.min_level, a.max_level, a.num_scales,
                                         a.aspect_ratios, a.anchor_scale, a.style),
        target_assigner=TargetAssigner(mc.positive_threshold, mc.negative_threshold,
                                       mc.best_match_threshold, config.box_coder.weights,
                                       use_crowd=config.data.crowd == "ignore"),
        class_loss=FocalLoss(loss.focal_alpha, loss.focal_gamma, loss.cls_normalizer),
        box_loss=build_box_loss(loss), detection_generator=generator,
        image_size=image_size or config.image_size, mask_branch=mask_branch,
        box_weight=loss.box_weight, normalization=normalization,
        clip_grad_norm=config.train.clip_grad_norm, name="retinamask")
    model.build()
    return model
