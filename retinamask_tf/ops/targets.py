"""Per-anchor classification and regression targets for a batch."""

import tensorflow as tf

from retinamask_tf.ops import box_coder, box_ops, matcher

# An anchor whose intersection with a crowd region covers at least this fraction
# of the anchor is ignored instead of negative (``crowd: ignore``).
CROWD_IOA_THRESHOLD = 0.5


def anchor_targets(anchors, gt_boxes, gt_classes, gt_valid, gt_crowd, positive_threshold,
                   negative_threshold, best_match_threshold, coder_weights):
    """Matches the anchors to each image's ground truth and encodes the targets.

    Args:
      anchors: [N, 4] yxyx absolute pixels (model input frame).
      gt_boxes: [B, G, 4] yxyx absolute pixels, padded.
      gt_classes: [B, G] int32 contiguous class index in [0, K).
      gt_valid: [B, G] bool, False on padding rows.
      gt_crowd: optional [B, G] bool; crowd rows never match and make the anchors
        they cover IGNORED instead of NEGATIVE.
    Returns:
      dict with
        labels: [B, N] int32 POSITIVE / NEGATIVE / IGNORED,
        cls_targets: [B, N] int32 class index on positives, -1 elsewhere,
        box_targets: [B, N, 4] float32 encoded deltas on positives, 0 elsewhere,
        matched_gt: [B, N] int32 GT row of each positive anchor.
    """
    gt_valid = tf.cast(gt_valid, tf.bool)
    match_valid = gt_valid
    if gt_crowd is not None:
        gt_crowd = tf.cast(gt_crowd, tf.bool) & gt_valid
        match_valid = gt_valid & ~gt_crowd
    batch = tf.shape(gt_boxes)[0]
    tiled = tf.tile(anchors[None], [batch, 1, 1])  # [B, N, 4]
    iou = box_ops.pairwise_iou(tiled, gt_boxes, match_valid)  # [B, N, G]
    matched, labels = matcher.match(iou, positive_threshold, negative_threshold,
                                    best_match_threshold)
    if gt_crowd is not None:
        ioa = box_ops.pairwise_ioa(tiled, gt_boxes)  # [B, N, G]
        in_crowd = tf.reduce_any((ioa >= CROWD_IOA_THRESHOLD) & gt_crowd[:, None, :], axis=-1)
        labels = tf.where((labels == matcher.NEGATIVE) & in_crowd, matcher.IGNORED, labels)
    positive = labels == matcher.POSITIVE
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)  # [B, N, 4]
    matched_classes = tf.gather(gt_classes, matched, batch_dims=1)  # [B, N]
    deltas = box_coder.encode(matched_boxes, tiled, coder_weights)
    return {
        "labels": labels,
        "cls_targets": tf.where(positive, tf.cast(matched_classes, tf.int32), -1),
        "box_targets": tf.where(positive[..., None], deltas, 0.0),
        "matched_gt": matched,
    }
