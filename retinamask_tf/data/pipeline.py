"""tf.data input pipelines from ``CocoDataset`` records."""

import json
import logging

import numpy as np
import tensorflow as tf

from retinamask_tf.data import coco, parser, synthetic

log = logging.getLogger(__name__)


def records_to_tensors(records, max_instances, with_masks=False):
    """Pads each image's annotations to ``max_instances`` rows.

    Returns:
      dict of numpy arrays with leading dim = number of images: path, image_id,
      boxes [n, M, 4], classes [n, M], crowd [n, M], valid [n, M]; with masks
      also height, width [n], mask_valid [n, M] and segmentations [n] (a JSON list
      of M entries, null where there is no usable mask); and the number of images
      that had more than M annotations (the extra rows are dropped, keeping the
      largest boxes).
    """
    n, m = len(records), max_instances
    boxes = np.zeros((n, m, 4), np.float32)
    classes = np.zeros((n, m), np.int32)
    crowd = np.zeros((n, m), bool)
    valid = np.zeros((n, m), bool)
    mask_valid = np.zeros((n, m), bool)
    segmentations = []
    truncated = 0
    for i, r in enumerate(records):
        order = np.arange(len(r.boxes))
        if len(order) > m:
            truncated += 1
            area = (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
            order = np.sort(np.argsort(-area, kind="stable")[:m])
        k = len(order)
        boxes[i, :k] = r.boxes[order]
        classes[i, :k] = r.classes[order]
        crowd[i, :k] = r.is_crowd[order]
        valid[i, :k] = True
        if with_masks:
            segs = [r.segmentations[j] if not r.is_crowd[j] else None for j in order]
            mask_valid[i, :k] = [s is not None for s in segs]
            segmentations.append(json.dumps(segs + [None] * (m - k)))
    tensors = {"path": np.array([r.path for r in records]),
               "image_id": np.array([r.image_id for r in records], np.int64),
               "boxes": boxes, "classes": classes, "crowd": crowd, "valid": valid}
    if with_masks:
        tensors.update(height=np.array([r.height for r in records], np.int32),
                       width=np.array([r.width for r in records], np.int32),
                       mask_valid=mask_valid, segmentations=np.array(segmentations))
    return tensors, truncated


def build_dataset(dataset, batch_size, image_size, short_side, long_side, max_instances,
                  training, hflip=True, shuffle_buffer=1024, seed=0, num_parallel_calls=-1,
                  mask_size=None):
    """Batched (features, labels) from a ``CocoDataset``.

    With ``mask_size`` S, labels also hold gt_masks [B, M, S, S] uint8 (box-frame
    masks, see ``ops.masks``) and gt_mask_valid [B, M].
    Training: shuffled (seeded) and repeated forever, flipped at random, last
    partial batch dropped. Evaluation: in file order, once, partial batch kept.
    Shapes: images [B, H, W, 3] float32 0..255 with (H, W) = image_size,
    image_info [B, 4], image_id [B], gt_boxes [B, M, 4], gt_classes/valid/crowd [B, M].
    """
    if mask_size and not dataset.has_masks:
        raise coco.DatasetError(f"{dataset.json_path} has no usable segmentations, but the mask "
                                "head needs them: set model.mask_head.enabled=false")
    tensors, truncated = records_to_tensors(dataset.records, max_instances, bool(mask_size))
    if truncated:
        log.warning("%s: %d images have more than max_instances=%d annotations; kept the %d "
                    "largest", dataset.json_path, truncated, max_instances, max_instances)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(dataset.records)), seed=seed,
                        reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(lambda i, ex: dict(ex, index=i))
    parallel = tf.data.AUTOTUNE if num_parallel_calls == -1 else num_parallel_calls
    ds = ds.map(lambda ex: parser.parse_example(ex, short_side, long_side, image_size, training,
                                                hflip, seed, mask_size),
                num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_splits(data_config):
    """(train CocoDataset, val CocoDataset) for a ``DataConfig``; generates the built-in
    dataset first when ``kind`` is ``builtin``. Val shares train's class mapping."""
    if data_config.kind == "builtin":
        b = data_config.builtin
        paths = synthetic.ensure_dataset(b.cache_dir, b.num_train, b.num_val, b.image_size,
                                         b.max_objects, b.min_object_size, b.seed)
    else:
        paths = {k: getattr(data_config, k)
                 for k in ("train_json", "train_images", "val_json", "val_images")}
    train = coco.load_coco(paths["train_json"], paths["train_images"], data_config.crowd)
    cats = [{"id": i, "name": n} for i, n in zip(train.class_ids, train.class_names)]
    val = coco.load_coco(paths["val_json"], paths["val_images"], data_config.crowd, categories=cats)
    return train, val
