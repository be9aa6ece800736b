"""Per-class non-maximum suppression with fixed-size, padded outputs."""

import tensorflow as tf


def per_class_nms(boxes, scores, classes, num_classes, max_detections=100, iou_threshold=0.4,
                  score_threshold=0.05):
    """Greedy NMS run separately for each class, then the best ``max_detections`` overall.

    Args:
      boxes: [B, N, 4] yxyx candidate boxes (any consistent unit).
      scores: [B, N] float32 candidate scores.
      classes: [B, N] int32 class index of each candidate in [0, num_classes).
      num_classes: K (static python int).
    Returns:
      dict of padded tensors: boxes [B, D, 4], scores [B, D], classes [B, D] int32,
      num_detections [B] int32, with D = max_detections; rows past
      num_detections are zero. Rows are sorted by decreasing score.
    """
    # combined_non_max_suppression takes [B, N, K] scores; each candidate is one
    # (anchor, class) pair, so it gets its score in its own class column only.
    per_class = tf.one_hot(classes, num_classes, dtype=scores.dtype) * scores[..., None]
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], per_class,
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_per_class=False, clip_boxes=False)
    num = tf.cast(nmsed.valid_detections, tf.int32)
    valid = tf.range(max_detections)[None, :] < num[:, None]
    return {
        "boxes": tf.where(valid[..., None], nmsed.nmsed_boxes, 0.0),
        "scores": tf.where(valid, nmsed.nmsed_scores, 0.0),
        "classes": tf.where(valid, tf.cast(nmsed.nmsed_classes, tf.int32), 0),
        "num_detections": num,
    }


def class_offset_nms(boxes, scores, classes, max_detections=100, iou_threshold=0.4,
                     score_threshold=0.05):
    """Per-class NMS of one image as a single greedy NMS (TFLite builtin ops only).

    Each class's boxes are shifted by ``class * (extent + 1)`` along both axes, so boxes of
    different classes never overlap and one ``NonMaxSuppressionV5`` over all candidates
    keeps exactly what per-class NMS followed by the top ``max_detections`` keeps (the
    greedy order is by score in both; ties may break differently). It converts to TFLite's
    builtin NON_MAX_SUPPRESSION_V5, where ``combined_non_max_suppression`` has no builtin.

    Args:
      boxes: [N, 4] yxyx boxes with non-negative coordinates (clipped to the image).
      scores: [N] float32; classes: [N] int32.
    Returns:
      dict of padded tensors: boxes [D, 4], scores [D], classes [D] int32, num_detections
      (scalar int32), D = max_detections, rows sorted by decreasing score, zero past
      num_detections (same layout as one image of ``per_class_nms``).
    """
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    extent = tf.reduce_max(boxes) + 1.0
    shifted = boxes + (tf.cast(classes, tf.float32) * extent)[:, None]
    idx, _, num = tf.raw_ops.NonMaxSuppressionV5(
        boxes=shifted, scores=scores, max_output_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, soft_nms_sigma=0.0,
        pad_to_max_output_size=True)
    num = tf.cast(num, tf.int32)
    valid = tf.range(max_detections) < num
    return {
        "boxes": tf.where(valid[:, None], tf.gather(boxes, idx), 0.0),
        "scores": tf.where(valid, tf.gather(scores, idx), 0.0),
        "classes": tf.where(valid, tf.gather(classes, idx), 0),
        "num_detections": num,
    }
