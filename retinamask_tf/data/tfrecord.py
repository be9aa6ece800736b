"""Sharded TFRecords of a COCO dataset, and the matching reader.

One ``tf.train.Example`` per image:
  image/encoded (the file's bytes, unchanged), image/filename, image/id, image/height,
  image/width, image/orientation (EXIF orientation to apply, see ``data.image_check``),
  object/bbox (n x 4 yxyx original pixels, flattened), object/class (contiguous index),
  object/crowd, object/ann_id, object/segmentation (one string per object: the packed
  segmentation of ``data.segmentations``, empty when unusable or crowd; files written
  before held JSON text, ``null`` for none, which reads the same).
``<prefix>-meta.json`` holds the class map and counts. Images are assigned round-robin to
the shards, and read back interleaved one by one, so the reader yields the images in the
original order and training from TFRecords sees exactly what training from the JSON sees
(a test compares them). Images are checked (``pipeline.verify_images``) before writing.
"""

import dataclasses
import glob
import json
import os
from typing import List

import tensorflow as tf

from retinamask_tf.data import padding
from retinamask_tf.data.errors import DatasetError


@dataclasses.dataclass
class TFRecordSource:
    """A written TFRecord dataset, with the attributes training needs from a CocoDataset."""

    json_path: str  # the meta file (named in messages)
    files: List[str]
    class_ids: List[int]
    class_names: List[str]
    num_examples: int
    has_masks: bool
    source_json: str

    records = None  # streamed: no records in memory (see DetectionSource)
    truncated = ()  # cut in the graph, not listed

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def summary(self) -> str:
        return (f"{self.json_path}: {self.num_examples} images in {len(self.files)} TFRecord "
                f"files (written from {self.source_json})")

    def read_examples(self, max_instances, with_masks=False):
        return read_examples(self, max_instances, with_masks)


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def record_to_example(record):
    """One ``ImageRecord`` -> tf.train.Example (reads the image file)."""
    with open(record.path, "rb") as f:
        encoded = f.read()
    segs = [b"" if s is None or crowd else s
            for s, crowd in zip(record.segmentations, record.is_crowd)]
    feature = {
        "image/encoded": _bytes([encoded]),
        "image/filename": _bytes([os.path.basename(record.path).encode()]),
        "image/id": _ints([record.image_id]),
        "image/height": _ints([record.height]),
        "image/width": _ints([record.width]),
        "image/orientation": _ints([record.orientation]),
        "object/bbox": _floats(record.boxes.reshape(-1)),
        "object/class": _ints(record.classes),
        "object/crowd": _ints(record.is_crowd.astype(int)),
        "object/ann_id": _ints(record.ann_ids),
        "object/segmentation": _bytes(segs),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(dataset, prefix, num_shards=4, progress=None):
    """Writes ``prefix-0000i-of-0000n.tfrecord`` shards and ``prefix-meta.json``.

    Returns the meta file's path.
    """
    num_shards = max(1, min(int(num_shards), len(dataset.records)))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    files = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(f + ".tmp") for f in files]
    try:
        for i, record in enumerate(dataset.records):
            writers[i % num_shards].write(record_to_example(record).SerializeToString())
            if progress:
                progress(i + 1)
    finally:
        for w in writers:
            w.close()
    for f in files:
        os.replace(f + ".tmp", f)
    meta = {"source_json": dataset.json_path, "class_ids": list(map(int, dataset.class_ids)),
            "class_names": list(dataset.class_names), "num_examples": len(dataset.records),
            "has_masks": bool(dataset.has_masks),
            "files": [os.path.basename(f) for f in files]}
    meta_path = f"{prefix}-meta.json"
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return meta_path


def load_source(meta_path):
    """The ``TFRecordSource`` described by a ``-meta.json`` file; its shards must exist."""
    if not os.path.isfile(meta_path):
        matches = sorted(glob.glob(meta_path))
        if len(matches) != 1:
            raise DatasetError(f"TFRecord meta file not found: {meta_path} (write it with "
                               "main.py --mode=make_tfrecords)")
        meta_path = matches[0]
    with open(meta_path) as f:
        meta = json.load(f)
    folder = os.path.dirname(os.path.abspath(meta_path))
    files = [os.path.join(folder, name) for name in meta["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DatasetError(f"{meta_path}: {len(missing)} TFRecord shard(s) missing, e.g. {missing[0]}")
    return TFRecordSource(meta_path, files, meta["class_ids"], meta["class_names"],
                          int(meta["num_examples"]), bool(meta["has_masks"]), meta["source_json"])


FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/orientation": tf.io.FixedLenFeature([], tf.int64, default_value=1),
    "object/bbox": tf.io.VarLenFeature(tf.float32),
    "object/class": tf.io.VarLenFeature(tf.int64),
    "object/crowd": tf.io.VarLenFeature(tf.int64),
    "object/segmentation": tf.io.VarLenFeature(tf.string),
}


def parse_serialized(serialized, max_instances, with_masks=False):
    """One serialized Example -> the element ``coco_tensors.records_to_dataset`` makes (with
    ``image_bytes`` instead of ``path``): objects padded to ``max_instances``, the largest
    kept (in their original order) when there are more."""
    ex = tf.io.parse_single_example(serialized, FEATURES)
    boxes = tf.reshape(tf.sparse.to_dense(ex["object/bbox"]), [-1, 4])
    classes = tf.cast(tf.sparse.to_dense(ex["object/class"]), tf.int32)
    crowd = tf.sparse.to_dense(ex["object/crowd"]) > 0
    segs = tf.sparse.to_dense(ex["object/segmentation"], default_value="")
    columns = {"classes": (classes, 0), "crowd": (crowd, False)}
    if with_masks:
        has_mask = (tf.strings.length(segs) > 0) & tf.not_equal(segs, "null")
        columns.update(segs=(segs, ""), mask_valid=(has_mask, False))
    boxes, kept, valid = padding.keep_largest_padded(boxes, max_instances, columns)
    out = {"image_bytes": ex["image/encoded"], "image_id": ex["image/id"],
           "orientation": tf.cast(ex["image/orientation"], tf.int32),
           "boxes": boxes, "classes": kept["classes"], "crowd": kept["crowd"], "valid": valid}
    if with_masks:
        out.update(
            height=tf.cast(ex["image/height"], tf.int32), width=tf.cast(ex["image/width"], tf.int32),
            mask_valid=kept["mask_valid"], segmentations=kept["segs"])
    return out


def read_examples(source, max_instances, with_masks=False):
    """tf.data of parsed examples in the original image order (see the module doc)."""
    files = tf.data.Dataset.from_tensor_slices(source.files)
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=len(source.files),
                          block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(lambda s: parse_serialized(s, max_instances, with_masks),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
