"""Instance-mask ops: training targets from box-frame GT masks (pasting predicted masks
back into the image: ``retinamask_tf.mask_paste``).

GT masks are stored in the *box frame*: an ``S x S`` grid covering the GT box
exactly (cell (i, j) spans ``[y0 + i h / S, y0 + (i + 1) h / S)`` and the same in
x). A mask lies inside its box, so nothing outside is lost, the storage does
not grow with the image (100 instances at S = 112 are 1.2 MB per image as
uint8, against ~100 MB of full-image masks at 1333 x 800), and resizing or
flipping the image leaves it unchanged (a flip reverses its columns).

Targets sample bilinearly with zeros outside the grid (the grid is padded by one zero
cell), then threshold: the convention of the reference paste.
"""

import tensorflow as tf

from retinamask_tf.ops.crop import gather_crop_and_resize


def select_class(mask_logits, classes):
    """Each RoI's channel of class-specific masks.

    Args:
      mask_logits: [..., m, m, K] (any number of leading dims, n of them).
      classes: [...] int32 with the same n leading dims.
    Returns:
      [..., m, m] float32.
    """
    n = len(classes.shape)
    perm = list(range(n)) + [n + 2, n, n + 1]  # class axis next to the leading dims
    return tf.gather(tf.transpose(tf.cast(mask_logits, tf.float32), perm), classes, batch_dims=n)


def _grid_to_normalized(start, end, src_start, src_size, src_cells, out_cells):
    """crop_and_resize coordinates for sampling ``out_cells`` cell centres of
    [start, end) from a source grid of ``src_cells`` cells covering
    [src_start, src_start + src_size), padded by one cell each side.

    Output cell k is centred at start + (k + 0.5) (end - start) / out_cells; a
    point p lies at source cell coordinate (p - src_start) / src_size * src_cells - 0.5,
    +1 for the padding; crop_and_resize reads normalised c at c * (src_cells + 1).
    """
    size = end - start
    first = start + 0.5 * size / out_cells
    last = end - 0.5 * size / out_cells
    src_size = tf.maximum(src_size, 1e-6)

    def to_norm(p):
        return ((p - src_start) / src_size * src_cells + 0.5) / (src_cells + 1)

    return to_norm(first), to_norm(last)


def mask_targets(gt_masks, gt_boxes, rois, matched_gt, output_size=28, xla_compatible=False):
    """Binary mask targets of RoIs: each matched GT mask cropped to the RoI and resized.

    Args:
      gt_masks: [B, M, S, S] box-frame GT masks (uint8/bool/float in {0, 1}).
      gt_boxes: [B, M, 4] yxyx, any frame (the one ``rois`` are in).
      rois: [B, R, 4] yxyx, same frame.
      matched_gt: [B, R] int32 index into M of each RoI's GT.
      xla_compatible: crop with ``crop.gather_crop_and_resize`` (same values; for
        ``jit_compile``).
    Returns:
      [B, R, output_size, output_size] float32 in {0, 1}.
    """
    shape = tf.shape(gt_masks)
    batch, num_gt, cells = shape[0], shape[1], gt_masks.shape[-1]
    num_rois = tf.shape(rois)[1]
    masks = tf.cast(tf.reshape(gt_masks, [-1, cells, cells, 1]), tf.float32)
    masks = tf.pad(masks, [[0, 0], [1, 1], [1, 1], [0, 0]])
    gt = tf.gather(tf.cast(gt_boxes, tf.float32), matched_gt, batch_dims=1)  # [B, R, 4]
    rois = tf.cast(rois, tf.float32)
    y_first, y_last = _grid_to_normalized(rois[..., 0], rois[..., 2], gt[..., 0],
                                          gt[..., 2] - gt[..., 0], cells, output_size)
    x_first, x_last = _grid_to_normalized(rois[..., 1], rois[..., 3], gt[..., 1],
                                          gt[..., 3] - gt[..., 1], cells, output_size)
    boxes = tf.reshape(tf.stack([y_first, x_first, y_last, x_last], -1), [-1, 4])
    index = tf.reshape(tf.range(batch)[:, None] * num_gt + matched_gt, [-1])
    crop = gather_crop_and_resize if xla_compatible else tf.image.crop_and_resize
    crops = crop(masks, boxes, index, [output_size, output_size], extrapolation_value=0.0)
    crops = tf.reshape(crops, [batch, num_rois, output_size, output_size])
    return tf.cast(crops >= 0.5, tf.float32)
