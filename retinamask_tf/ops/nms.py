"""Per-class non-maximum suppression with fixed-size, padded outputs."""

import tensorflow as tf


def per_class_nms(boxes, scores, classes, num_classes, max_detections, iou_threshold,
                  score_threshold):
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


def class_offset_nms(boxes, scores, classes, max_detections, iou_threshold,
                     score_threshold):
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


def _suppression_iou(a, b):
    """IoU as TF's NMS kernels compute it: [B, N, 4], [B, M, 4] -> [B, N, M]; a pair in
    which either box has no area gets 0 (so an empty box never suppresses or is suppressed).
    """
    a = tf.expand_dims(a, -2)
    b = tf.expand_dims(b, -3)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    ih = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = ih * iw
    iou = inter / tf.maximum(area_a + area_b - inter, 1e-12)
    return tf.where((area_a > 0) & (area_b > 0), iou, 0.0)


def padded_per_class_nms(boxes, scores, classes, max_detections, iou_threshold,
                         score_threshold, block_size=256):
    """``per_class_nms`` in static shapes and XLA-compilable ops (``jit_compile``).

    The same greedy per-class NMS, computed in blocks of ``block_size`` candidates taken in
    score order: a block's candidates are first suppressed by the boxes kept in earlier
    blocks, then the greedy order inside the block is resolved by iterating
    ``keep[j] = candidate[j] and no kept i < j of j's class overlaps j`` to its fixed point
    (after t rounds the first t entries are final, so this ends within ``block_size``
    rounds and the fixed point is the greedy result). It stops once every image has
    ``max_detections`` boxes or no candidate above ``score_threshold`` is left, so the work
    is usually one or two blocks, and memory is [B, block_size, N], never [B, N, N].
    Boxes are boxes: coordinates must be ordered (ymin <= ymax, xmin <= xmax), as they are
    after ``box_coder.decode``. Equal scores are taken in candidate order.

    Args:
      boxes: [B, N, 4] yxyx; scores: [B, N] float32; classes: [B, N] int32 (static N).
    Returns:
      dict as ``per_class_nms``: boxes [B, D, 4], scores [B, D], classes [B, D] int32,
      num_detections [B] int32, D = max_detections, sorted by decreasing score, zero
      past num_detections.
    """
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    n = int(scores.shape[1])
    size = max(1, min(int(block_size), n))
    num_blocks = -(-n // size)
    total = num_blocks * size
    order = tf.math.top_k(scores, k=n, sorted=True).indices  # score order; ties by index
    boxes = tf.pad(tf.gather(boxes, order, batch_dims=1), [[0, 0], [0, total - n], [0, 0]])
    scores = tf.pad(tf.gather(scores, order, batch_dims=1), [[0, 0], [0, total - n]],
                    constant_values=-1.0)
    classes = tf.pad(tf.gather(classes, order, batch_dims=1), [[0, 0], [0, total - n]],
                     constant_values=-1)
    candidate = scores > score_threshold  # [B, N']: a prefix, scores being sorted
    batch = tf.shape(scores)[0]

    def blocks(t):  # [B, N', ...] -> [B, num_blocks, T, ...]
        return tf.reshape(t, tf.concat([[batch, num_blocks, size], tf.shape(t)[2:]], 0))

    box_blocks, class_blocks, candidate_blocks = blocks(boxes), blocks(classes), blocks(candidate)
    earlier = tf.range(size)[:, None] < tf.range(size)[None, :]  # [i, j]: i comes before j

    def cond(b, keep):
        kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=[1, 2])
        first = tf.gather(candidate_blocks, tf.minimum(b, num_blocks - 1), axis=1)[:, 0]
        return (b < num_blocks) & tf.reduce_any(first & (kept < max_detections))

    def body(b, keep):
        blk_boxes = tf.gather(box_blocks, b, axis=1)  # [B, T, 4]
        blk_classes = tf.gather(class_blocks, b, axis=1)
        # Suppressed by a box kept in an earlier block (keep is False from block b on).
        overlap = ((_suppression_iou(blk_boxes, boxes) > iou_threshold)
                   & (blk_classes[:, :, None] == classes[:, None, :]))  # [B, T, N']
        hit = tf.reduce_any(overlap & tf.reshape(keep, [batch, 1, total]), axis=2)
        blk_candidate = tf.gather(candidate_blocks, b, axis=1) & ~hit
        inner = ((_suppression_iou(blk_boxes, blk_boxes) > iou_threshold)
                 & (blk_classes[:, :, None] == blk_classes[:, None, :]) & earlier)  # [B, T, T]

        def step(blk_keep, _changed):
            new = blk_candidate & ~tf.reduce_any(inner & blk_keep[:, :, None], axis=1)
            return new, tf.reduce_any(tf.not_equal(new, blk_keep))

        blk_keep, _ = tf.while_loop(lambda k, changed: changed, step,
                                    (blk_candidate, tf.constant(True)),
                                    maximum_iterations=size + 1)
        this_block = tf.equal(tf.range(num_blocks), b)[None, :, None]
        return b + 1, keep | (this_block & blk_keep[:, None, :])

    _, keep = tf.while_loop(cond, body, (tf.constant(0), tf.zeros_like(candidate_blocks)))
    keep = tf.reshape(keep, [batch, total])
    # The first max_detections kept boxes, in score order.
    rank = tf.where(keep, total - tf.range(total), 0)
    top_rank, index = tf.math.top_k(rank, k=min(max_detections, total))
    valid = top_rank > 0
    out = {
        "boxes": tf.where(valid[..., None], tf.gather(boxes, index, batch_dims=1), 0.0),
        "scores": tf.where(valid, tf.gather(scores, index, batch_dims=1), 0.0),
        "classes": tf.where(valid, tf.gather(classes, index, batch_dims=1), 0),
    }
    if max_detections > total:  # fewer candidates than detection slots
        out = {k: tf.pad(v, [[0, 0], [0, max_detections - total]] + [[0, 0]] * (v.shape.rank - 2))
               for k, v in out.items()}
    out["num_detections"] = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    return out
