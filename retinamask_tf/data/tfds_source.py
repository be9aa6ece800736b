"""TensorFlow Datasets detection builders (``coco/2017`` and any builder with its features)
as a training source, and a TFDS split written out as a COCO JSON for evaluation.

The features read: ``image`` (an Image feature; its stored bytes are decoded by our own
parser, as for files), ``objects/bbox`` (a BBoxFeature: yxyx normalised to [0, 1] of the
stored image), ``objects/label`` (a ClassLabel), optionally ``objects/is_crowd`` and
``image/id``. TFDS ``coco/2017`` has boxes only: no instance masks, so the mask head cannot
train on it (``config`` refuses ``data.kind=tfds`` with the mask head enabled).

Class mapping: our contiguous class index follows the dataset's category ids, as for COCO
JSON. With ``data.val_json`` given, TFDS labels (which carry names, not COCO ids) are
joined to its categories by name, so results use the real COCO ids; otherwise category id
= label + 1 in label order. Objects whose box is empty or not finite, or whose label is
outside the label list, are dropped; crowd objects follow ``data.crowd`` as for JSON.
"""

import dataclasses
import io
import json
import os
from typing import List, Optional

import tensorflow as tf

from retinamask_tf.data import coco, padding
from retinamask_tf.data.errors import DatasetError

INSTALL_HINT = "pip install 'retinamask-tf[tfds]' (or: pip install tensorflow-datasets)"


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(f"data.kind=tfds needs tensorflow-datasets: {INSTALL_HINT}") from e
    return tfds


@dataclasses.dataclass
class TFDSSource:
    """One split of a TFDS detection builder, with the attributes training needs from a
    ``CocoDataset`` (``json_path`` is the name used in messages)."""

    json_path: str  # "tfds:<name>:<split>"
    name: str
    split: str
    data_dir: Optional[str]
    class_ids: List[int]  # contiguous index -> category id
    class_names: List[str]
    label_to_class: List[int]  # TFDS label -> contiguous index
    num_examples: int
    crowd: str = "drop"
    has_masks: bool = False

    records = None  # streamed: no records in memory (see DetectionSource)
    truncated = ()  # cut in the graph, not listed

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def summary(self) -> str:
        return (f"{self.json_path}: {self.num_examples} images, {self.num_classes} classes "
                f"(TFDS, data_dir {self.data_dir or 'default'})")

    def read_examples(self, max_instances, with_masks=False):
        if with_masks:
            raise DatasetError(f"{self.json_path} has no instance masks")
        return read_examples(self, max_instances)


def _builder(name, data_dir):
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends: the message says enough
        raise DatasetError(f"TFDS dataset '{name}' (data.tfds_name) not found: {e}") from e
    features = builder.info.features
    objects = features["objects"] if "objects" in features else None
    missing = [k for k, ok in (("image", "image" in features),
                               ("objects", objects is not None),
                               ("objects/bbox", objects is not None and "bbox" in objects),
                               ("objects/label", objects is not None and "label" in objects))
               if not ok]
    if missing:
        raise DatasetError(f"TFDS dataset '{name}' is not a detection dataset: it lacks the "
                           f"features {missing} (need image, objects/bbox, objects/label)")
    return builder


def _split_size(builder, name, split, data_dir):
    if not builder.info.splits:
        raise DatasetError(f"TFDS dataset '{name}' is not prepared in {data_dir or 'the default data_dir'} "
                           f"(data.tfds_data_dir): build it first, e.g. `tfds build {name} "
                           "--data_dir=<dir>`")
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as e:
        raise DatasetError(f"TFDS dataset '{name}' has no split '{split}' (splits: "
                           f"{sorted(builder.info.splits.keys())})") from e


def load_source(name, split, data_dir=None, crowd="drop", categories=None):
    """The ``TFDSSource`` of one split.

    Args:
      categories: COCO categories ([{id, name}]) to join the TFDS labels to by name; None:
        ids label + 1.
    Raises:
      DatasetError: tensorflow-datasets missing, unknown dataset or split, features that
        are not a detection dataset's, or a TFDS label name absent from ``categories``.
    """
    builder = _builder(name, data_dir)
    num = _split_size(builder, name, split, data_dir)
    if num == 0:
        raise DatasetError(f"TFDS dataset '{name}' split '{split}' is empty")
    names = list(builder.info.features["objects"]["label"].names)
    if categories is None:
        class_ids, class_names, label_to_class = (list(range(1, len(names) + 1)), names,
                                                  list(range(len(names))))
    else:
        cats = sorted(categories, key=lambda c: c["id"])
        by_name = {c["name"]: i for i, c in enumerate(cats)}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DatasetError(f"TFDS dataset '{name}' labels {missing[:10]} have no category of "
                               f"that name in data.val_json ({len(missing)} of {len(names)} "
                               "missing); the labels are joined to its categories by name")
        class_ids = [int(c["id"]) for c in cats]
        class_names = [c["name"] for c in cats]
        label_to_class = [by_name[n] for n in names]
    return TFDSSource(f"tfds:{name}:{split}", name, split, data_dir, class_ids, class_names,
                      label_to_class, num, crowd)


def _as_dataset(source):
    tfds = _tfds()
    builder = tfds.builder(source.name, data_dir=source.data_dir)
    # The stored bytes, decoded by our parser (the same decoder as for files); file order.
    return builder.as_dataset(split=source.split, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})


def object_columns(ex, source):
    """One TFDS example -> (normalised boxes [n, 4], classes [n], crowd [n]) of the
    objects kept (see the module doc)."""
    objects = ex["objects"]
    boxes = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4])
    labels = tf.cast(tf.reshape(objects["label"], [-1]), tf.int32)
    n = tf.shape(boxes)[0]
    crowd = (tf.cast(tf.reshape(objects["is_crowd"], [-1]), tf.bool) if "is_crowd" in objects
             else tf.zeros([n], tf.bool))
    checks = [tf.debugging.assert_equal(tf.shape(labels)[0], n, message=(
        f"{source.json_path}: objects/bbox and objects/label differ in length"))]
    if "is_crowd" in objects:
        checks.append(tf.debugging.assert_equal(tf.shape(crowd)[0], n, message=(
            f"{source.json_path}: objects/bbox and objects/is_crowd differ in length")))
    with tf.control_dependencies(checks):
        boxes = tf.identity(boxes)
    keep = (tf.reduce_all(tf.math.is_finite(boxes), axis=1)
            & (labels >= 0) & (labels < len(source.label_to_class)))
    boxes = tf.clip_by_value(tf.where(keep[:, None], boxes, 0.0), 0.0, 1.0)
    keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if source.crowd == "drop":
        keep &= ~crowd
    classes = tf.gather(tf.constant(source.label_to_class, tf.int32),
                        tf.clip_by_value(labels, 0, len(source.label_to_class) - 1))
    return (tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep),
            tf.boolean_mask(crowd, keep))


def read_examples(source, max_instances):
    """tf.data of elements as ``tfrecord.read_examples`` makes, in the split's order, with
    ``normalized_boxes`` [M, 4] (yxyx in [0, 1]) instead of pixel ``boxes``: the parser
    scales them by the decoded image's size. Image id: ``image/id``, else the position."""
    def convert(index, ex):
        boxes, classes, crowd = object_columns(ex, source)
        boxes, kept, valid = padding.keep_largest_padded(
            boxes, max_instances, {"classes": (classes, 0), "crowd": (crowd, False)})
        image_id = tf.cast(ex["image/id"], tf.int64) if "image/id" in ex else index + 1
        return {"image_bytes": ex["image"], "image_id": image_id,
                "orientation": tf.constant(1, tf.int32), "normalized_boxes": boxes,
                "classes": kept["classes"], "crowd": kept["crowd"], "valid": valid}

    return _as_dataset(source).enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE,
                                                 deterministic=True)


def write_coco_split(source, out_dir, progress=None):
    """Writes a TFDS split as ``out_dir/annotations.json`` + ``out_dir/images/`` (the stored
    image bytes, unchanged) so that COCO evaluation, the inspector and the drawings can use
    it; a complete earlier write of the same split is reused.

    Returns (json_path, image_dir).
    """
    from PIL import Image

    source = dataclasses.replace(source, crowd="ignore")  # crowd boxes: COCO eval ignores them
    json_path = os.path.join(out_dir, "annotations.json")
    image_dir = os.path.join(out_dir, "images")
    stamp = {"tfds": source.name, "split": source.split, "num_examples": source.num_examples,
             "class_ids": source.class_ids}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            if json.load(f).get("info") == stamp:
                return json_path, image_dir
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index, ex in _as_dataset(source).enumerate():
        index = int(index)
        data = ex["image"].numpy()
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                ext = {"JPEG": ".jpg", "PNG": ".png"}.get(im.format, ".img")
        except Exception as e:
            raise DatasetError(f"{source.json_path}: example {index} has an unreadable "
                               f"image: {e}") from e
        image_id = int(ex["image/id"]) if "image/id" in ex else index + 1
        stem = (os.path.splitext(os.path.basename(ex["image/filename"].numpy().decode()))[0]
                if "image/filename" in ex else f"{image_id:012d}")
        file_name = stem + ext
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(data)
        images.append({"id": image_id, "file_name": file_name, "height": height,
                       "width": width})
        boxes, classes, crowd = (t.numpy() for t in object_columns(ex, source))
        for box, cls, is_crowd in zip(boxes * [height, width, height, width], classes, crowd):
            y0, x0, y1, x1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(source.class_ids[cls]),
                                "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": int(is_crowd)})
        if progress:
            progress(index + 1)
    tmp = f"{json_path}.{os.getpid()}.tmp"  # every worker of a multi-worker run writes it
    with open(tmp, "w") as f:
        json.dump({"info": stamp, "images": images, "annotations": annotations,
                   "categories": coco.categories(source)}, f)
    os.replace(tmp, json_path)
    return json_path, image_dir

