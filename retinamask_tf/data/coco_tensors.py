"""In-memory COCO records as the tf.data elements of ``CocoDataset.read_examples``.

The annotations are stored once, flat: every image's boxes, classes and crowd flags one
after the other (a ragged tensor by image), so memory follows the number of annotations,
not images x ``max_instances`` or images x the longest image. Each element is padded to
``max_instances`` rows in the graph (``padding.keep_largest_padded``, the same rule as for
TFRecords). Packed segmentations stay where they are (the dataset's ``PackedStore``, see
``data.segmentations``); an element looks up its rows' segmentations by annotation index.
"""

import os

import numpy as np
import tensorflow as tf

from retinamask_tf.data import padding
from retinamask_tf.data.segmentations import flat_store


def truncated_images(records, max_instances):
    """[(image_id, path, annotation count)] of the records with more than
    ``max_instances`` annotations (the extra rows are left out, keeping the largest boxes)."""
    return [(r.image_id, r.path, len(r.boxes)) for r in records if len(r.boxes) > max_instances]


def records_to_dataset(records, max_instances, with_masks=False):
    """tf.data of one element per record, in order (see ``DetectionSource.read_examples``).

    Args:
      records: ``coco.ImageRecord`` list.
      max_instances: M, rows per element.
      with_masks: also height, width, mask_valid [M] and segmentations [M] (packed bytes per
        row, ``b""`` where there is no usable mask, crowd regions included).
    Returns:
      tf.data.Dataset of dicts: path, image_id, orientation, boxes [M, 4] (yxyx, original
      pixels), classes [M], crowd [M], valid [M] (and the mask fields).
    """
    counts = np.array([len(r.boxes) for r in records], np.int64)
    splits = np.concatenate([[0], np.cumsum(counts)])

    def ragged(values):
        return tf.RaggedTensor.from_row_splits(values, splits, validate=False)

    boxes = np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)])
    crowd = np.concatenate([r.is_crowd for r in records] + [np.zeros(0, bool)])
    columns = {"classes": np.concatenate([r.classes for r in records] + [np.zeros(0, np.int32)]),
               "crowd": crowd}
    # Paths as the file system's bytes: a name that is not UTF-8 (read from the JSON as
    # surrogate escapes) still opens.
    tensors = {"path": np.array([os.fsencode(r.path) for r in records], dtype=object),
               "image_id": np.array([r.image_id for r in records], np.int64),
               "orientation": np.array([r.orientation for r in records], np.int32)}
    store = index = None
    if with_masks:
        store, index = flat_store([r.segmentations for r in records])
        columns["mask_valid"] = store.has_mask(index) & ~crowd  # crowd regions: no targets
        columns["ann_index"] = np.arange(len(index), dtype=np.int64)
        tensors.update(height=np.array([r.height for r in records], np.int32),
                       width=np.array([r.width for r in records], np.int32))
    tensors.update(boxes=ragged(boxes), **{k: ragged(v) for k, v in columns.items()})
    pad_values = {"classes": 0, "crowd": False, "mask_valid": False, "ann_index": -1}

    def lookup(rows):
        valid = columns["mask_valid"]
        return np.array([store.get(index[i]) if i >= 0 and valid[i] else b"" for i in rows],
                        dtype=object)

    def pad(example):
        kept_boxes, kept, valid = padding.keep_largest_padded(
            example["boxes"], max_instances,
            {k: (example[k], pad_values[k]) for k in columns})
        out = {k: example[k] for k in ("path", "image_id", "orientation")}
        out.update(boxes=kept_boxes, classes=kept["classes"], crowd=kept["crowd"], valid=valid)
        if with_masks:
            segs = tf.numpy_function(lookup, [kept["ann_index"]], tf.string, stateful=False)
            out.update(height=example["height"], width=example["width"],
                       mask_valid=kept["mask_valid"],
                       segmentations=tf.ensure_shape(segs, [max_instances]))
        return out

    return tf.data.Dataset.from_tensor_slices(tensors).map(
        pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
