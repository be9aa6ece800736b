"""Anchor-to-ground-truth matching with RetinaMask's best matching (paper section 3.1).

Turns an IoU matrix into ``(matched_gt, labels)`` and nothing else, like
detectron2's ``Matcher``.
"""

import tensorflow as tf

POSITIVE = 1
NEGATIVE = 0
IGNORED = -1


def match(iou, positive_threshold=0.5, negative_threshold=0.4, best_match_threshold=0.0):
    """Matches anchors (rows) to ground-truth boxes (columns).

    Rules, in order:
      * max IoU >= positive_threshold -> POSITIVE;
      * max IoU <  negative_threshold -> NEGATIVE;
      * otherwise IGNORED;
      * best matching (``best_match_threshold`` not None): for every GT column,
        every anchor whose IoU equals that column's maximum (ties included)
        becomes POSITIVE if that maximum is > best_match_threshold. Such an
        anchor keeps the GT it overlaps most (its row argmax), as in the
        released code.

    Args:
      iou: [..., N, G] float32, padded/invalid GT columns set to a negative value
        (``box_ops.pairwise_iou(..., valid2=...)`` gives -1), so they never match.
      positive_threshold, negative_threshold: floats, negative <= positive.
      best_match_threshold: float or None (off).
    Returns:
      matched_gt: [..., N] int32 column index of the best GT (0 when there is none;
        only meaningful where labels == POSITIVE).
      labels: [..., N] int32 in {POSITIVE, NEGATIVE, IGNORED}.
    """
    iou = tf.convert_to_tensor(iou, tf.float32)
    num_gt = tf.shape(iou)[-1]

    def _with_gt():
        max_iou = tf.reduce_max(iou, axis=-1)
        matched = tf.argmax(iou, axis=-1, output_type=tf.int32)
        labels = tf.where(max_iou >= positive_threshold, POSITIVE,
                          tf.where(max_iou < negative_threshold, NEGATIVE, IGNORED))
        if best_match_threshold is not None:
            best_per_gt = tf.reduce_max(iou, axis=-2, keepdims=True)  # [..., 1, G]
            is_best = (iou == best_per_gt) & (best_per_gt > best_match_threshold)
            labels = tf.where(tf.reduce_any(is_best, axis=-1), POSITIVE, labels)
        return matched, tf.cast(labels, tf.int32)

    def _no_gt():
        shape = tf.shape(iou)[:-1]
        return tf.zeros(shape, tf.int32), tf.fill(shape, tf.constant(NEGATIVE, tf.int32))

    if iou.shape[-1] is not None:
        return _with_gt() if iou.shape[-1] > 0 else _no_gt()
    return tf.cond(num_gt > 0, _with_gt, _no_gt)
