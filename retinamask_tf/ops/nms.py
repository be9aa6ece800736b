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
