"""RetinaNet inference post-processing, as the released code's.

score > threshold; per level the top-k (anchor, class) pairs; decode; clip to
the image; per-class NMS; top detections per image.

One deliberate difference from the released code: a candidate whose box has no area
after clipping (it lay wholly outside the valid image) is dropped before NMS. The released
code's legacy "+1" box widths give such boxes an area of 1 and keep them; they can only be
false positives (IoU 0 with every ground truth). Dropping them also keeps TFLite's
NON_MAX_SUPPRESSION_V5 correct: it suppresses the box it selects by the box's IoU with
itself, which is 0 for an empty box, so one empty box was selected again and again and
filled every remaining detection slot. ``keep_empty_boxes=True`` keeps them, as torchvision
does (for parity with its detections; the TFLite graph always drops them).
"""

import tensorflow as tf

from retinamask_tf.ops import box_coder, box_ops, nms


def select_top_candidates(cls_logits, box_deltas, anchors, level_counts, pre_nms_top_k):
    """Per level, the ``pre_nms_top_k`` highest-scoring (anchor, class) pairs.

    Args:
      cls_logits: [B, N, K] logits, N = sum(level_counts), anchor order of
        ``anchors.generate_anchors``.
      box_deltas: [B, N, 4] deltas (dy, dx, dh, dw).
      anchors: [N, 4] yxyx.
      level_counts: python list of anchors per level.
    Returns:
      scores [B, C] (sigmoid), classes [B, C] int32, deltas [B, C, 4],
      anchors [B, C, 4], where C = sum over levels of min(k, N_l * K).
    """
    num_classes = cls_logits.shape[-1]
    out_scores, out_classes, out_deltas, out_anchors = [], [], [], []
    start = 0
    for count in level_counts:
        logits = tf.cast(cls_logits[:, start:start + count], tf.float32)
        flat = tf.reshape(logits, [-1, count * num_classes])
        k = min(pre_nms_top_k, count * num_classes)
        top_logits, top_idx = tf.math.top_k(flat, k=k, sorted=False)
        anchor_idx = top_idx // num_classes
        out_scores.append(tf.sigmoid(top_logits))
        out_classes.append(top_idx % num_classes)
        # The batch-aligned gather as one flat gather (OpenVINO 2026.4's CPU plugin crashed
        # on the batch_dims=1 form of this one).
        deltas = tf.reshape(box_deltas[:, start:start + count], [-1, 4])
        rows = anchor_idx + tf.range(tf.shape(anchor_idx)[0])[:, None] * count
        out_deltas.append(tf.gather(deltas, rows))
        out_anchors.append(tf.gather(anchors[start:start + count], anchor_idx))
        start += count
    return (tf.concat(out_scores, 1), tf.concat(out_classes, 1),
            tf.concat(out_deltas, 1), tf.concat(out_anchors, 1))


def _decoded_candidates(cls_logits, box_deltas, anchors, level_counts, image_shape, settings,
                        coder, keep_empty_boxes):
    """Top candidates, decoded and clipped: (boxes [B, C, 4], scores [B, C], classes [B, C]).
    Candidates whose clipped box is empty get score -1, below any score threshold (unless
    ``keep_empty_boxes``)."""
    scores, classes, deltas, cand_anchors = select_top_candidates(
        cls_logits, box_deltas, anchors, level_counts, settings.pre_nms_top_k)
    boxes = box_coder.decode(deltas, cand_anchors, coder.weights, coder.scale_clip)
    image_shape = tf.cast(image_shape, tf.float32)
    boxes = box_ops.clip_boxes(boxes, image_shape[:, None, 0], image_shape[:, None, 1])
    if keep_empty_boxes:
        return boxes, scores, classes
    non_empty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    return boxes, tf.where(non_empty, scores, -1.0), classes


def generate_detections(cls_logits, box_deltas, anchors, level_counts, image_shape, settings,
                        coder, max_detections=None, padded_nms=False):
    """Raw head outputs -> final detections in the model-input frame.

    Args:
      cls_logits: [B, N, K]; box_deltas: [B, N, 4]; anchors: [N, 4] yxyx.
      image_shape: [B, 2] float32 (height, width) of the valid (unpadded) image
        in the model input; boxes are clipped to it.
      settings: the post-processing settings, whole (``config.PostprocessConfig``:
        score_threshold, pre_nms_top_k, nms_iou_threshold, max_detections,
        keep_empty_boxes: keep candidates whose clipped box has no area, as torchvision).
      coder: the box coder's settings (``config.BoxCoderConfig``: weights, scale_clip).
      max_detections: replaces ``settings.max_detections`` (the mask branch's training RoIs).
      padded_nms: use ``nms.padded_per_class_nms`` (XLA-compilable, same result) instead
        of ``combined_non_max_suppression`` (no XLA kernel; faster outside XLA on CPU).
    Returns:
      dict: boxes [B, D, 4] yxyx model-input pixels, scores [B, D],
      classes [B, D] int32 (contiguous index), num_detections [B] int32.
    """
    num_classes = int(cls_logits.shape[-1])
    max_detections = int(settings.max_detections if max_detections is None else max_detections)
    boxes, scores, classes = _decoded_candidates(cls_logits, box_deltas, anchors, level_counts,
                                                 image_shape, settings, coder,
                                                 settings.keep_empty_boxes)
    if padded_nms:
        return nms.padded_per_class_nms(boxes, scores, classes, max_detections,
                                        settings.nms_iou_threshold, settings.score_threshold)
    return nms.per_class_nms(boxes, scores, classes, num_classes, max_detections,
                             settings.nms_iou_threshold, settings.score_threshold)


def generate_detections_single(cls_logits, box_deltas, anchors, level_counts, image_shape,
                               settings, coder):
    """``generate_detections`` for a batch of one, in TFLite builtin ops only.

    Same arguments with B = 1 and the same result (``nms.class_offset_nms`` instead of
    ``combined_non_max_suppression``; candidates whose clipped box is empty are always
    dropped, whatever ``settings.keep_empty_boxes`` says); returns boxes [1, D, 4],
    scores [1, D], classes [1, D] int32, num_detections [1] int32.
    """
    boxes, scores, classes = _decoded_candidates(cls_logits, box_deltas, anchors, level_counts,
                                                 image_shape, settings, coder, False)
    det = nms.class_offset_nms(boxes[0], scores[0], classes[0], settings.max_detections,
                               settings.nms_iou_threshold, settings.score_threshold)
    return {k: v[None] for k, v in det.items()}
