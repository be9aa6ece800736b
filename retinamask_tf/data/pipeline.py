"""tf.data input pipelines from ``CocoDataset`` records."""

import dataclasses
import logging
import os
from typing import Optional, Tuple

import tensorflow as tf

from retinamask_tf.config import ConfigError
from retinamask_tf.data import coco, image_check, parser, synthetic, tfds_source, tfrecord
from retinamask_tf.data.runtime_skips import RuntimeSkips
from retinamask_tf.ops import pixels
from retinamask_tf.progress import Progress

log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What one input pipeline produces (``build_dataset``): batch, static padded size, the
    resize rule, how many annotation rows, and for training the augmentation and order.

    ``mask_size`` S: labels also hold gt_masks [B, M, S, S] uint8 (box-frame masks, see
    ``ops.masks``) and gt_mask_valid [B, M]; None: boxes only. ``train_short_sides`` /
    ``scale_jitter``: multi-scale training (see ``parser.training_scale``).
    ``num_parallel_calls`` -1: tf.data.AUTOTUNE. ``pad_value``: None (black) or the RGB
    pixel the padding holds (``ops.pixels.pad_pixel``).
    """

    batch_size: int
    image_size: Tuple[int, int]
    short_side: int
    long_side: int
    max_instances: int
    training: bool
    hflip: bool = True
    shuffle_buffer: int = 1024
    seed: int = 0
    num_parallel_calls: int = -1
    mask_size: Optional[int] = None
    train_short_sides: Optional[Tuple[int, ...]] = None
    scale_jitter: Optional[Tuple[float, float]] = None
    pad_value: Optional[Tuple[float, float, float]] = None

    @classmethod
    def from_config(cls, config, training):
        """The training (``train.batch_size``, augmentation, masks when the mask head is
        on) or evaluation (``eval.batch_size``, file order, boxes only) spec of an
        ``ExperimentConfig``."""
        c, mh = config, config.model.mask_head
        if not training:
            return cls(c.eval.batch_size, c.image_size, c.data.short_side, c.data.long_side,
                       c.data.max_instances, training=False,
                       num_parallel_calls=c.data.num_parallel_calls, pad_value=pixels.pad_pixel(c))
        return cls(c.train.batch_size, c.image_size, c.data.short_side, c.data.long_side,
                   c.data.max_instances, training=True, hflip=c.data.hflip,
                   shuffle_buffer=c.data.shuffle_buffer, seed=c.train.seed,
                   num_parallel_calls=c.data.num_parallel_calls,
                   mask_size=mh.gt_mask_size if mh.enabled else None,
                   train_short_sides=c.data.train_short_sides, scale_jitter=c.data.scale_jitter,
                   pad_value=pixels.pad_pixel(c))


def splits_for(config):
    """(train, val) ``DetectionSource``s of an ``ExperimentConfig``'s data, with their
    segmentations when its mask head is on (``load_splits``)."""
    return load_splits(config.data, masks=config.model.mask_head.enabled)


def dataset_for(config, source, training, skips=None):
    """``build_dataset(source, InputSpec.from_config(config, training))``: a config's
    training pipeline (the ``model.fit`` input) or its evaluation pipeline. A config whose
    ``model.num_classes`` is not the source's class count is a ConfigError naming both."""
    num_classes = config.model.num_classes
    if num_classes is not None and num_classes != source.num_classes:
        raise ConfigError(f"config key 'model.num_classes' is {num_classes} but "
                          f"{source.json_path} has {source.num_classes} classes: a model for "
                          "this data needs model.num_classes="
                          f"{source.num_classes} (or null: taken from the data)")
    return build_dataset(source, InputSpec.from_config(config, training), skips)


def build_dataset(dataset, spec, skips=None):
    """Batched (features, labels) of a ``DetectionSource`` (a ``CocoDataset``, or a streamed
    ``tfrecord.TFRecordSource`` / ``tfds_source.TFDSSource``: the same elements), as
    ``spec`` (an ``InputSpec``) says.

    Training: shuffled (seeded) and repeated forever, flipped at random, last partial batch
    dropped. Evaluation: in file order, once, partial batch kept. An image that fails to
    decode (see ``runtime_skips``) is dropped, logged and counted in ``skips`` (a
    ``RuntimeSkips``; a fresh one if None), never silently.
    Shapes: images [B, H, W, 3] float32 0..255 with (H, W) = image_size,
    image_info [B, 4], image_id [B], gt_boxes [B, M, 4], gt_classes/valid/crowd [B, M].
    """
    batch_size, image_size, short_side, long_side, max_instances, training = (
        spec.batch_size, spec.image_size, spec.short_side, spec.long_side, spec.max_instances,
        spec.training)
    mask_size, seed, hflip = spec.mask_size, spec.seed, spec.hflip
    if mask_size and not dataset.has_masks:
        raise coco.DatasetError(f"{dataset.json_path} has no usable segmentations, but the mask "
                                "head needs them: set model.mask_head.enabled=false")
    ds = dataset.read_examples(max_instances, bool(mask_size))
    if skips is not None:
        skips.truncated = dataset.truncated
    if training:
        ds = ds.shuffle(min(spec.shuffle_buffer, dataset.num_examples), seed=seed,
                        reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(lambda i, ex: dict(ex, index=i))
    parallel = tf.data.AUTOTUNE if spec.num_parallel_calls == -1 else spec.num_parallel_calls
    ds = parse_or_skip(
        ds, lambda ex: parser.parse_example(ex, short_side, long_side, image_size, training,
                                            hflip, seed, mask_size, spec.train_short_sides,
                                            spec.scale_jitter, spec.pad_value),
        parallel, skips if skips is not None else RuntimeSkips(dataset.json_path))
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
    checks = image_check.check_images(records, mode, cache_dir, progress)
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


def _required(data_config, split):
    """ConfigError naming the key when ``split`` has no JSON."""
    if not getattr(data_config, f"{split}_json"):
        what = "training" if split == "train" else "evaluation"
        raise ConfigError(f"config key 'data.{split}_json' (and data.{split}_images) is "
                          f"required for {what} with data.kind '{data_config.kind}'")


def _builtin_files(d, split):
    """(json, image folder) of a split of the built-in dataset, generated first (once: it
    is cached)."""
    b = d.builtin
    paths = synthetic.ensure_dataset(b.cache_dir, b.num_train, b.num_val, b.image_size,
                                     b.max_objects, b.min_object_size, b.seed)
    return paths[f"{split}_json"], paths[f"{split}_images"]


def _coco_files(d, split):
    _required(d, split)
    return getattr(d, f"{split}_json"), getattr(d, f"{split}_images")


def _tfds_files(d, split):
    """val: ``data.val_json`` when given, else the TFDS val split written once as COCO
    JSON + images; the training split is read from the builder (``_tfds_splits``)."""
    if split == "val" and not d.val_json:
        return _tfds_val_as_coco(d)
    return _coco_files(d, split)


def _file_splits(d, masks):
    """(train, val) of a dataset on disk as COCO JSON + images (kinds builtin, coco), or
    train from ``data.train_tfrecord`` (its images were checked when it was written)."""
    if d.train_tfrecord:
        train = tfrecord.load_source(d.train_tfrecord)
    else:
        json_path, images = DATA_KINDS[d.kind].files(d, "train")
        train = verify_images(coco.load_coco(json_path, images, d.crowd, masks=masks),
                              d.verify_images, d.image_check_cache, progress=True)
    return train, load_val(d, coco.categories(train), masks)


def _tfds_splits(d, masks):
    """(train ``TFDSSource``, val CocoDataset) for ``data.kind=tfds``. Val is
    ``data.val_json`` when given (TFDS labels joined to its categories by name), else the
    TFDS val split written once as COCO JSON + images (``_tfds_val_as_coco``)."""
    if d.val_json:  # read once: its categories are the class mapping of both splits
        val = coco.load_coco(d.val_json, d.val_images, d.crowd, masks=masks)
        train = tfds_source.load_source(d.tfds_name, d.tfds_train_split, d.tfds_data_dir,
                                        d.crowd, categories=coco.categories(val))
        return train, verify_images(val, d.verify_images, d.image_check_cache, progress=True)
    train = tfds_source.load_source(d.tfds_name, d.tfds_train_split, d.tfds_data_dir, d.crowd)
    return train, load_val(d, coco.categories(train), masks)


@dataclasses.dataclass(frozen=True)
class DataKind:
    """How one ``data.kind`` is read: ``splits(data_config, masks)`` -> (train, val)
    ``DetectionSource``s; ``files(data_config, split)`` -> the split's (COCO JSON, image
    folder); ``names_training(data_config)``: whether the config says where training data
    is (an imported model's config may name none)."""

    splits: object
    files: object
    names_training: object


# data.kind -> its reader: the one place the kinds are told apart.
DATA_KINDS = {
    "builtin": DataKind(_file_splits, _builtin_files, lambda d: True),
    "coco": DataKind(_file_splits, _coco_files,
                     lambda d: bool(d.train_json or d.train_tfrecord)),
    "tfds": DataKind(_tfds_splits, _tfds_files, lambda d: True),
}


def load_splits(data_config, masks=True):
    """(train, val) ``DetectionSource``s of a ``DataConfig``, by its ``kind``
    (``DATA_KINDS``): the built-in dataset (generated once), a COCO JSON + images per split
    (train from ``data.train_tfrecord`` instead when set), or a TFDS builder. Val is a
    CocoDataset sharing train's class mapping. Image files are checked
    (``verify_images``). ``masks`` False: segmentations are not read (``coco.load_coco``:
    training without the mask head keeps no mask in memory)."""
    return DATA_KINDS[data_config.kind].splits(data_config, masks)


def names_training_data(data_config):
    """Whether ``data_config`` says where its training split is."""
    return DATA_KINDS[data_config.kind].names_training(data_config)


def load_val(data_config, categories, masks=False):
    """The val ``CocoDataset`` with the class mapping ``categories`` (``[{"id", "name"}]``
    in contiguous-index order: the training split's, or a run's label map), images
    checked. Evaluation of a finished run reads this alone, never the training split; it
    scores masks against the JSON itself, so the records need none (``masks``)."""
    d = data_config
    json_path, image_dir = DATA_KINDS[d.kind].files(d, "val")
    val = coco.load_coco(json_path, image_dir, d.crowd, categories=categories, masks=masks)
    return verify_images(val, d.verify_images, d.image_check_cache, progress=True)


def _tfds_val_as_coco(d):
    """(json, image folder) of the TFDS val split, written once as COCO JSON + images
    (``tfds_source.write_coco_split``)."""
    val_source = tfds_source.load_source(d.tfds_name, d.tfds_val_split, d.tfds_data_dir)
    cache = d.image_check_cache or "~/.cache/retinamask_tf"
    out = d.tfds_val_dir or os.path.join(os.path.expanduser(cache), "tfds",
                                         d.tfds_name.replace("/", "_").replace(":", "_"),
                                         d.tfds_val_split)
    bar = Progress(val_source.num_examples, unit="image") if val_source.num_examples > 1000 else None
    return tfds_source.write_coco_split(val_source, out, bar.update if bar else None)
