"""tf.data input pipelines from ``CocoDataset`` records."""

import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from retinamask_tf.data import coco, image_check, parser, synthetic, tfds_source, tfrecord
from retinamask_tf.data.runtime_skips import RuntimeSkips
from retinamask_tf.training.progress import Progress

log = logging.getLogger(__name__)


def records_to_tensors(records, max_instances, with_masks=False):
    """Pads each image's annotations to ``max_instances`` rows.

    Returns:
      dict of numpy arrays with leading dim = number of images: path, image_id,
      boxes [n, M, 4], classes [n, M], crowd [n, M], valid [n, M]; with masks
      also height, width [n], mask_valid [n, M] and segmentations [n] (a JSON list
      of M entries, null where there is no usable mask); and [(image_id, path, count)]
      of the images that had more than M annotations (the extra rows are dropped,
      keeping the largest boxes).
    """
    n, m = len(records), max_instances
    boxes = np.zeros((n, m, 4), np.float32)
    classes = np.zeros((n, m), np.int32)
    crowd = np.zeros((n, m), bool)
    valid = np.zeros((n, m), bool)
    mask_valid = np.zeros((n, m), bool)
    segmentations = []
    truncated = []
    for i, r in enumerate(records):
        order = np.arange(len(r.boxes))
        if len(order) > m:
            truncated.append((r.image_id, r.path, len(order)))
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
    # Paths as the file system's bytes: a name that is not UTF-8 (read from the JSON as
    # surrogate escapes) still opens.
    tensors = {"path": np.array([os.fsencode(r.path) for r in records], dtype=object),
               "image_id": np.array([r.image_id for r in records], np.int64),
               "orientation": np.array([r.orientation for r in records], np.int32),
               "boxes": boxes, "classes": classes, "crowd": crowd, "valid": valid}
    if with_masks:
        tensors.update(height=np.array([r.height for r in records], np.int32),
                       width=np.array([r.width for r in records], np.int32),
                       mask_valid=mask_valid, segmentations=np.array(segmentations))
    return tensors, truncated


def _zeros(spec):
    return tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)


def parse_or_skip(ds, parse, parallel, skips):
    """``ds.map(parse)`` where an element whose parsing fails (an image that no longer
    decodes) is dropped and reported to ``skips`` (a ``RuntimeSkips``) with its file and
    image id, instead of ending the stream (or vanishing, as ``ignore_errors`` would).

    Each element is parsed in a one-element dataset whose error is caught there; a
    placeholder marked as failed follows it, and is what comes out when the parse failed.
    Order is kept (``deterministic``) and the pipeline stays checkpointable.
    """
    def one(example):
        parsed = tf.data.Dataset.from_tensors(example).map(
            lambda e: (parse(e), tf.constant(True))).ignore_errors()
        failed = tf.data.Dataset.from_tensors((_zeros(parsed.element_spec[0]),
                                               tf.constant(False)))
        path = example.get("path", tf.constant(""))
        return parsed.concatenate(failed).take(1).map(
            lambda out, ok: (out, ok, path, example["image_id"]))

    def report(ok, path, image_id):
        if ok:
            return True
        skips.add(path, image_id)
        return False

    ds = ds.interleave(one, cycle_length=parallel, block_length=1, num_parallel_calls=parallel,
                       deterministic=True)
    ds = ds.filter(lambda out, ok, path, image_id: tf.numpy_function(
        report, [ok, path, image_id], tf.bool, stateful=False))
    return ds.map(lambda out, ok, path, image_id: out)


def build_dataset(dataset, batch_size, image_size, short_side, long_side, max_instances,
                  training, hflip=True, shuffle_buffer=1024, seed=0, num_parallel_calls=-1,
                  mask_size=None, train_short_sides=None, scale_jitter=None, skips=None):
    """Batched (features, labels) from a ``CocoDataset`` (or a streamed source,
    ``tfrecord.TFRecordSource`` or ``tfds_source.TFDSSource``: the same elements).

    Training with ``train_short_sides`` / ``scale_jitter``: multi-scale (see
    ``parser.training_scale``). With ``mask_size`` S, labels also hold gt_masks
    [B, M, S, S] uint8 (box-frame masks, see ``ops.masks``) and gt_mask_valid [B, M].
    Training: shuffled (seeded) and repeated forever, flipped at random, last
    partial batch dropped. Evaluation: in file order, once, partial batch kept.
    An image that fails to decode (see ``runtime_skips``) is dropped, logged and counted
    in ``skips`` (a ``RuntimeSkips``; a fresh one if None), never silently.
    Shapes: images [B, H, W, 3] float32 0..255 with (H, W) = image_size,
    image_info [B, 4], image_id [B], gt_boxes [B, M, 4], gt_classes/valid/crowd [B, M].
    """
    if mask_size and not dataset.has_masks:
        raise coco.DatasetError(f"{dataset.json_path} has no usable segmentations, but the mask "
                                "head needs them: set model.mask_head.enabled=false")
    if hasattr(dataset, "read_examples"):  # a streamed source: TFRecords or TFDS
        ds = dataset.read_examples(max_instances, bool(mask_size))
        num_examples = dataset.num_examples
    else:
        tensors, truncated = records_to_tensors(dataset.records, max_instances, bool(mask_size))
        if skips is not None:
            skips.truncated = truncated
        if truncated:
            for image_id, path, count in truncated[:20]:
                log.warning("%s: image %d (%s) has %d annotations; kept the %d largest "
                            "(data.max_instances)", dataset.json_path, image_id, path, count,
                            max_instances)
            log.warning("%s: %d images have more than data.max_instances=%d annotations: %d "
                        "annotations left out%s", dataset.json_path, len(truncated),
                        max_instances, sum(c - max_instances for _, _, c in truncated),
                        " (the first 20 named above)" if len(truncated) > 20 else "")
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        num_examples = len(dataset.records)
    if training:
        ds = ds.shuffle(min(shuffle_buffer, num_examples), seed=seed,
                        reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(lambda i, ex: dict(ex, index=i))
    parallel = tf.data.AUTOTUNE if num_parallel_calls == -1 else num_parallel_calls
    ds = parse_or_skip(
        ds, lambda ex: parser.parse_example(ex, short_side, long_side, image_size, training,
                                            hflip, seed, mask_size, train_short_sides,
                                            scale_jitter),
        parallel, skips if skips is not None else RuntimeSkips(getattr(dataset, "json_path", "")))
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def verify_images(dataset, mode="full", cache_dir=None, progress=False):
    """``dataset`` without the images ``image_check`` rejects, with EXIF orientations set.

    Each skipped image is logged with its file, image id and reason; counts go to
    ``skipped_images`` (by kind) and ``converted_images`` (by note).
    Raises:
      DatasetError: when no image is usable.
    """
    if mode == "off":
        return dataset
    records = dataset.records
    bar = Progress(len(records), unit="image") if progress and len(records) > 1000 else None
    checks = image_check.check_images(records, mode, cache_dir, bar.update if bar else None)
    kept, skipped, converted = [], {}, {}
    for record, check in zip(records, checks):
        if check.problem:
            skipped[check.kind] = skipped.get(check.kind, 0) + 1
            log.warning("%s: skipping image %s (%s): %s", dataset.json_path, record.image_id,
                        record.path, check.problem)
            continue
        if check.note:
            converted[check.note] = converted.get(check.note, 0) + 1
        kept.append(dataclasses.replace(record, orientation=check.orientation)
                    if check.orientation != 1 else record)
    if not kept:
        raise coco.DatasetError(f"{dataset.json_path}: no usable images among {len(records)} "
                                f"(skipped: {skipped}); first: {records[0].path}")
    if skipped:
        log.warning("%s: skipped %d of %d images: %s", dataset.json_path, len(records) - len(kept),
                    len(records), skipped)
    return dataclasses.replace(dataset, records=kept, skipped_images=skipped,
                               converted_images=converted)


def load_splits(data_config):
    """(train CocoDataset, val CocoDataset) for a ``DataConfig``; generates the built-in
    dataset first when ``kind`` is ``builtin``. Val shares train's class mapping. With
    ``train_tfrecord`` set, train is that ``tfrecord.TFRecordSource`` instead (its images
    were checked when it was written). With ``kind`` tfds, train is a
    ``tfds_source.TFDSSource`` (see ``load_tfds_splits``). Image files are checked
    (``verify_images``)."""
    if data_config.kind == "tfds":
        return load_tfds_splits(data_config)
    if data_config.kind == "builtin":
        b = data_config.builtin
        paths = synthetic.ensure_dataset(b.cache_dir, b.num_train, b.num_val, b.image_size,
                                         b.max_objects, b.min_object_size, b.seed)
    else:
        paths = {k: getattr(data_config, k)
                 for k in ("train_json", "train_images", "val_json", "val_images")}
    cache = data_config.image_check_cache
    if data_config.train_tfrecord:
        train = tfrecord.load_source(data_config.train_tfrecord)  # checked when written
    else:
        train = verify_images(coco.load_coco(paths["train_json"], paths["train_images"],
                                             data_config.crowd),
                              data_config.verify_images, cache, progress=True)
    val = coco.load_coco(paths["val_json"], paths["val_images"], data_config.crowd,
                         categories=coco.categories(train))
    return train, verify_images(val, data_config.verify_images, cache, progress=True)


def load_tfds_splits(data_config):
    """(train ``TFDSSource``, val CocoDataset) for ``data.kind=tfds``. Val is
    ``data.val_json`` when given (TFDS labels joined to its categories by name), else the
    TFDS val split written once as COCO JSON + images (``tfds_source.write_coco_split``)."""
    d = data_config
    cache = d.image_check_cache
    if d.val_json:
        val = coco.load_coco(d.val_json, d.val_images, d.crowd)
        train = tfds_source.load_source(d.tfds_name, d.tfds_train_split, d.tfds_data_dir,
                                        d.crowd, categories=coco.categories(val))
    else:
        train = tfds_source.load_source(d.tfds_name, d.tfds_train_split, d.tfds_data_dir, d.crowd)
        val_source = tfds_source.load_source(d.tfds_name, d.tfds_val_split, d.tfds_data_dir)
        out = d.tfds_val_dir or os.path.join(os.path.expanduser(cache or "~/.cache/retinamask_tf"),
                                             "tfds", d.tfds_name.replace("/", "_").replace(":", "_"),
                                             d.tfds_val_split)
        bar = Progress(val_source.num_examples, unit="image") if val_source.num_examples > 1000 else None
        json_path, image_dir = tfds_source.write_coco_split(val_source, out,
                                                            bar.update if bar else None)
        val = coco.load_coco(json_path, image_dir, d.crowd, categories=coco.categories(train))
    return train, verify_images(val, d.verify_images, cache, progress=True)
