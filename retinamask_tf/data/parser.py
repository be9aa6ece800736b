"""Decoding and geometric preprocessing of one example (pure TF, runs in tf.data).

Output frame: the image resized so that its short side is ``short_side`` (long
side at most ``long_side``), optionally flipped, then zero-padded at the
bottom/right to the static ``output_size``. Boxes follow the image (yxyx,
pixels of the resized image).
"""

import tensorflow as tf

from retinamask_tf.data import instance_masks
from retinamask_tf.ops.exif import apply_exif_orientation, exif_orientation
from retinamask_tf.ops.resize import resize_and_pad


def decode_image(path=None, data=None):
    """File path (or its encoded bytes) -> [H, W, 3] float32 RGB 0..255 (grayscale/RGBA
    converted), in the stored frame (EXIF ignored: datasets say which frame their
    annotations use, see ``data.image_check``)."""
    data = tf.io.read_file(path) if data is None else data
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32)


def decode_displayed(data):
    """Encoded bytes -> [H, W, 3] uint8 RGB as displayed: the EXIF orientation read from
    the bytes is applied (``ops.exif``), as ``image_io.read_rgb`` does with PIL."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = apply_exif_orientation(image, exif_orientation(data))
    image.set_shape([None, None, 3])
    return image


def scale_boxes(boxes, image_info):
    """Original-frame yxyx boxes [M, 4] -> resized frame."""
    s = image_info[2:4]
    return boxes * tf.concat([s, s], axis=0)


def hflip(image, boxes, image_info):
    """Flips the resized (unpadded part of the) image and its boxes left-right.

    Only the valid region is mirrored; the padding stays at the right.
    """
    width = tf.round(image_info[1] * image_info[3])
    valid_w = tf.cast(width, tf.int32)
    valid = tf.reverse(image[:, :valid_w], axis=[1])
    image = tf.concat([valid, image[:, valid_w:]], axis=1)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return image, tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)


def instance_masks_of(example, mask_size):
    """[M, S, S] uint8 box-frame masks of an example (rasterised on the host)."""
    masks = tf.numpy_function(instance_masks.rasterize_instances,
                              [example["segmentations"], example["boxes"], example["height"],
                               example["width"], mask_size, example["image_id"]],
                              tf.uint8, stateful=False)
    return tf.ensure_shape(masks, [example["boxes"].shape[0], mask_size, mask_size])


def training_scale(index, seed, short_side, train_short_sides=None, scale_jitter=None):
    """(short side, jitter factor or None) of one training image: drawn from
    ``train_short_sides`` and ``scale_jitter`` with stateless seeds from (seed, index)."""
    seed_pair = tf.stack([tf.cast(seed, tf.int64) + 7919, tf.cast(index, tf.int64)])
    if train_short_sides:
        i = tf.random.stateless_uniform([], seed=seed_pair, maxval=len(train_short_sides),
                                        dtype=tf.int32)
        short_side = tf.gather(tf.constant(train_short_sides, tf.float32), i)
    jitter = None
    if scale_jitter:
        jitter = tf.random.stateless_uniform([], seed=seed_pair + [1, 0],
                                             minval=scale_jitter[0], maxval=scale_jitter[1])
    return short_side, jitter


def parse_example(example, short_side, long_side, output_size, training, hflip_enabled, seed,
                  mask_size=None, train_short_sides=None, scale_jitter=None, pad_value=None):
    """One ``pipeline`` element -> (features, labels).

    Args:
      example: dict path (or image_bytes), image_id, boxes [M, 4] (original frame; or
        normalized_boxes [M, 4] in [0, 1] of the decoded image), classes [M],
        crowd [M], valid [M], orientation (EXIF, optional: 1 = as stored), and index
        (the element's position: seeds the flip and the multi-scale draws); with
        ``mask_size`` also segmentations [M] (packed, ``data.segmentations``), height,
        width, mask_valid (see ``coco_tensors.records_to_dataset``).
    Returns:
      features: images [oh, ow, 3] float32, image_info [4], image_id int64.
      labels: gt_boxes [M, 4] (resized frame), gt_classes [M] int32, gt_valid [M]
        bool, gt_crowd [M] bool; with ``mask_size`` S also gt_masks [M, S, S] uint8
        (box frame, flipped with the image) and gt_mask_valid [M] bool.
    """
    image = (decode_image(data=example["image_bytes"]) if "image_bytes" in example
             else decode_image(example["path"]))
    if "orientation" in example:
        image = apply_exif_orientation(image, example["orientation"])
        image.set_shape([None, None, 3])
    if "normalized_boxes" in example:  # TFDS: yxyx in [0, 1] of the decoded image
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        example = dict(example, boxes=example["normalized_boxes"] * tf.tile(size, [2]))
    jitter = None
    if training and (train_short_sides or scale_jitter):
        short_side, jitter = training_scale(example["index"], seed, short_side,
                                            train_short_sides, scale_jitter)
    image, info = resize_and_pad(image, short_side, long_side, output_size, jitter, pad_value)
    boxes = scale_boxes(example["boxes"], info)
    if training and hflip_enabled:
        flip = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64),
                                                              example["index"]])) < 0.5
        image, boxes = tf.cond(flip, lambda: hflip(image, boxes, info), lambda: (image, boxes))
        image = tf.ensure_shape(image, [output_size[0], output_size[1], 3])
    valid = example["valid"]
    labels = {}
    if mask_size:
        masks = instance_masks_of(example, mask_size)
        if training and hflip_enabled:
            masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)
        labels = {"gt_masks": masks, "gt_mask_valid": example["mask_valid"] & valid}
    boxes = tf.where(valid[:, None], boxes, 0.0)
    features = {"images": image, "image_info": info, "image_id": example["image_id"]}
    labels.update(gt_boxes=boxes, gt_classes=example["classes"], gt_valid=valid,
                  gt_crowd=example["crowd"])
    return features, labels
