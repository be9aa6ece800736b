"""Training RoIs of the mask branch: the detector's own detections plus the GT boxes."""

import tensorflow as tf

from retinamask_tf.ops import box_ops


def training_rois(det_boxes, num_detections, gt_boxes, gt_valid, gt_has_mask, iou_threshold=0.5):
    """"100 + GT" RoIs per image, matched to the GT (RetinaMask 3.3).

    Args:
      det_boxes: [B, D, 4] yxyx detections (padded; the first ``num_detections``
        are real), already stop-gradient.
      num_detections: [B] int32.
      gt_boxes: [B, M, 4] yxyx, same frame.
      gt_valid: [B, M] bool, real non-crowd GT rows.
      gt_has_mask: [B, M] bool, rows whose mask target is usable.
      iou_threshold: a RoI is positive when its best IoU with a GT is >= this.
    Returns:
      rois [B, M + D, 4] (GT rows first); positive [B, M + D] bool (a real RoI
      whose best GT has a usable mask; a RoI whose best GT has no mask is not
      trained, never given a wrong target); matched_gt [B, M + D] int32 (index
      into M; 0 where nothing matches).
    """
    num_det_slots = tf.shape(det_boxes)[1]
    det_valid = tf.range(num_det_slots)[None, :] < tf.cast(num_detections, tf.int32)[:, None]
    finite = tf.reduce_all(tf.math.is_finite(det_boxes), axis=-1)
    det_valid &= finite
    det_boxes = tf.where(finite[..., None], det_boxes, 0.0)
    rois = tf.concat([tf.cast(gt_boxes, tf.float32), tf.cast(det_boxes, tf.float32)], axis=1)
    roi_valid = tf.concat([gt_valid, det_valid], axis=1)
    iou = box_ops.pairwise_iou(rois, tf.cast(gt_boxes, tf.float32), gt_valid)  # [B, R, M]
    best_iou = tf.reduce_max(iou, axis=-1)
    matched = tf.argmax(iou, axis=-1, output_type=tf.int32)
    positive = (roi_valid & (best_iou >= iou_threshold)
                & tf.gather(gt_has_mask & gt_valid, matched, batch_dims=1))
    return rois, positive, tf.where(positive, matched, 0)


def positives_first(rois, positive, matched_gt, max_rois):
    """Keeps ``max_rois`` RoIs per image, positives first (in their order).

    Only positive RoIs carry mask loss, so while an image has at most
    ``max_rois`` positives the loss is unchanged and the mask head runs on fewer
    RoIs. Beyond that, the last positives (detections; GT rows come first) are
    dropped.

    Returns:
      (rois [B, K, 4], positive [B, K], matched_gt [B, K], dropped [B] int32
      positives that did not fit), K = min(max_rois, R).
    """
    k = min(int(max_rois), int(rois.shape[1]))
    rois, kept, matched_gt = _first_k_positives(rois, positive, matched_gt, k)
    dropped = (tf.reduce_sum(tf.cast(positive, tf.int32), 1)
               - tf.reduce_sum(tf.cast(kept, tf.int32), 1))
    return rois, kept, matched_gt, dropped


def trim_to_positives(rois, positive, matched_gt):
    """Positives first, cut to the largest positive count of any image in the batch.

    The mask head then runs on [B, P_max] RoIs instead of [B, R]: the released code runs
    it on the positives alone, and the loss only counts positives, so it is unchanged.
    The slot count is dynamic (at least 1, so an image batch without positives still
    runs an empty-loss head); XLA needs static shapes and uses ``positives_first``.

    Args:
      rois [B, R, 4], positive [B, R] bool, matched_gt [B, R] int32 (``training_rois``).
    Returns:
      (rois [B, K, 4], positive [B, K], matched_gt [B, K]), K = max(1, max_b P_b) <= R.
    """
    count = tf.reduce_sum(tf.cast(positive, tf.int32), 1)
    k = tf.minimum(tf.maximum(tf.reduce_max(count), 1), tf.shape(positive)[1])
    return _first_k_positives(rois, positive, matched_gt, k)


def _first_k_positives(rois, positive, matched_gt, k):
    """The first ``k`` (static or dynamic) RoIs of each image after moving its positives
    to the front, each group in its own order: (rois, positive, matched_gt) [B, k, ...]."""
    _, index = tf.math.top_k(tf.cast(positive, tf.float32), k=k, sorted=True)  # stable on ties
    return (tf.gather(rois, index, batch_dims=1), tf.gather(positive, index, batch_dims=1),
            tf.gather(matched_gt, index, batch_dims=1))
