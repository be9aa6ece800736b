"""COCO instances JSON reader.

Produces one ``ImageRecord`` per image with boxes in yxyx absolute pixels of the
original image and contiguous class indices. Category ids may be any integers
(COCO's run 1..90 with gaps); ``CocoDataset.class_ids`` maps the contiguous
index back to the dataset's own id, which results files use.
"""

import dataclasses
import json
import logging
import os
from typing import List, Optional

import numpy as np

from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.instance_masks import segmentation_problem

__all__ = ["CocoDataset", "DatasetError", "ImageRecord", "load_coco"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageRecord:
    """One image and its annotations (boxes yxyx absolute pixels, original frame)."""

    image_id: int
    path: str
    height: int
    width: int
    boxes: np.ndarray  # [n, 4] float32 yxyx
    classes: np.ndarray  # [n] int32 contiguous index
    is_crowd: np.ndarray  # [n] bool
    ann_ids: np.ndarray  # [n] int64
    segmentations: list  # n COCO segmentations (polygon lists or RLE dicts); None: unusable
    orientation: int = 1  # EXIF orientation applied at decode time (see data.image_check)


@dataclasses.dataclass
class CocoDataset:
    json_path: str
    image_dir: str
    records: List[ImageRecord]
    class_ids: List[int]  # contiguous index -> dataset category id
    class_names: List[str]
    skipped: dict  # reason -> count of annotations dropped
    skipped_masks: dict = dataclasses.field(default_factory=dict)  # reason -> count; boxes kept
    skipped_images: dict = dataclasses.field(default_factory=dict)  # kind -> count (image_check)
    converted_images: dict = dataclasses.field(default_factory=dict)  # note -> count

    @property
    def has_masks(self) -> bool:
        """Whether any non-crowd annotation has a usable segmentation."""
        return any(s is not None for r in self.records for s in r.segmentations)

    truncated: list = dataclasses.field(default_factory=list)  # see DetectionSource

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def num_examples(self) -> int:
        return len(self.records)

    def read_examples(self, max_instances, with_masks=False):
        """``DetectionSource.read_examples`` from the records in memory; images with more
        than ``max_instances`` annotations keep the largest boxes, are logged (the first 20
        by name) and listed in ``truncated``."""
        import tensorflow as tf

        from retinamask_tf.data.coco_tensors import records_to_tensors
        tensors, self.truncated = records_to_tensors(self.records, max_instances, with_masks)
        for image_id, path, count in self.truncated[:20]:
            log.warning("%s: image %d (%s) has %d annotations; kept the %d largest "
                        "(data.max_instances)", self.json_path, image_id, path, count,
                        max_instances)
        if self.truncated:
            log.warning("%s: %d images have more than data.max_instances=%d annotations: %d "
                        "annotations left out%s", self.json_path, len(self.truncated),
                        max_instances, sum(c - max_instances for _, _, c in self.truncated),
                        " (the first 20 named above)" if len(self.truncated) > 20 else "")
        return tf.data.Dataset.from_tensor_slices(tensors)

    def summary(self) -> str:
        """One line on what was used, skipped and converted (printed at the start of training)."""
        n_skip = sum(self.skipped_images.values())
        parts = [f"{self.json_path}: {len(self.records)} images, "
                 f"{sum(len(r.boxes) for r in self.records)} annotations used"]
        if n_skip:
            parts.append(f"{n_skip} of {len(self.records) + n_skip} images skipped "
                         f"{dict(sorted(self.skipped_images.items()))}")
        if self.converted_images:
            parts.append(f"converted {dict(sorted(self.converted_images.items()))}")
        if self.skipped:
            parts.append(f"{sum(self.skipped.values())} annotations skipped {self.skipped}")
        if self.skipped_masks:
            parts.append(f"{sum(self.skipped_masks.values())} masks unusable (boxes kept) "
                         f"{self.skipped_masks}")
        elif not self.has_masks:
            parts.append("boxes only (no segmentations)")
        return "; ".join(parts)


def categories(dataset) -> List[dict]:
    """``[{"id", "name"}]`` of a dataset's classes in contiguous-index order (any source
    with ``class_ids`` and ``class_names``): the ``categories`` argument of ``load_coco``
    that makes another split share its class mapping, or a COCO file's section."""
    return [{"id": int(i), "name": n} for i, n in zip(dataset.class_ids, dataset.class_names)]


def _require(entry, keys, where):
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is not an object: {_shown(entry, 200)}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{where} (id {_shown(entry.get('id'))}) lacks "
                           f"{', '.join(map(repr, missing))}")


def _positive_int(value):
    return _is_int(value) and value > 0


def _is_int(value, bits=64):
    """An integer (not a bool) that fits a signed integer of ``bits`` (image and annotation
    ids travel as int64 tensors, category ids as int32 in the exported models)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and -2 ** (bits - 1) <= value < 2 ** (bits - 1))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value, limit=100, quote=True):
    """A value for an error message: short, and printable whatever its characters."""
    text = repr(value) if quote or not isinstance(value, str) else value
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _float(value):
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        return float("inf")


def _read_json(json_path):
    """The parsed file, or a DatasetError saying why it is not readable JSON."""
    if not os.path.isfile(json_path):
        raise DatasetError(f"annotation file not found: {json_path}")
    with open(json_path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")  # JSON is UTF-8 (a byte-order mark is tolerated)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                           f"{e.start}); JSON files must be UTF-8: re-save it as UTF-8") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_path} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise DatasetError(f"{json_path} is nested too deeply to be a COCO file") from e


def load_coco(json_path: str, image_dir: str, crowd: str = "drop",
              categories: Optional[List[dict]] = None) -> CocoDataset:
    """Reads a COCO instances JSON.

    Args:
      json_path: the annotations file.
      image_dir: folder the images' ``file_name`` are relative to.
      crowd: "drop" (released code: crowd annotations removed) or "ignore"
        (kept, flagged in ``is_crowd``; the matcher ignores anchors inside them).
      categories: category list to use for the class mapping (pass the train
        split's so that train and val share one mapping); default: this file's.
    Returns:
      CocoDataset. Annotations with a box of zero or negative size are skipped
      with a warning naming the image and annotation id, and counted in
      ``skipped``. Boxes are clipped to the image. A non-crowd annotation whose
      segmentation is unusable (degenerate polygon, RLE of another size) keeps its
      box; its segmentation becomes None (never a wrong mask), with a warning
      naming the image and annotation id, counted in ``skipped_masks``.
    Images without annotations are kept (background-only examples, as in COCO).
    Raises:
      DatasetError: file missing or not COCO, an entry lacking a required key or with a
        malformed bbox/size, an unknown category id, duplicate ids, no images.
    """
    data = _read_json(json_path)
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{json_path} is not a COCO instances file: it needs the keys "
                           "'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    if categories is None:
        for i, cat in enumerate(data["categories"]):
            _require(cat, ("id",), f"{json_path}: category entry {i}")
            if not _is_int(cat["id"], bits=32):
                raise DatasetError(f"{json_path}: category entry {i} has id {_shown(cat['id'])} "
                                   f"({type(cat['id']).__name__}); category ids must be 32-bit "
                                   "integers")
    cats = sorted(categories if categories is not None else data["categories"], key=lambda c: c["id"])
    if not cats:
        raise DatasetError(f"{json_path} has no categories")
    class_ids = [int(c["id"]) for c in cats]
    if len(set(class_ids)) != len(class_ids):
        duplicates = sorted({c for c in class_ids if class_ids.count(c) > 1})
        raise DatasetError(f"{json_path}: duplicate category ids {duplicates}")
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    images = {}
    for i, img in enumerate(data["images"]):
        where = f"{json_path}: image entry {i}"
        _require(img, ("id", "file_name", "height", "width"), where)
        if not _is_int(img["id"]):
            raise DatasetError(f"{where} has id {_shown(img['id'])} "
                               f"({type(img['id']).__name__}); image ids must be 64-bit integers")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(f"{where} (id {img['id']}) has file_name "
                               f"{_shown(img['file_name'])}; expected a non-empty string")
        if not (_positive_int(img["height"]) and _positive_int(img["width"])):
            raise DatasetError(f"{json_path}: image {img['id']} ({_shown(img['file_name'], quote=False)}) has "
                               f"height {_shown(img['height'])} and width {_shown(img['width'])}; "
                               "both must be positive integers")
        if img["id"] in images:
            raise DatasetError(f"{json_path}: duplicate image id {img['id']}")
        images[img["id"]] = img
    per_image = {iid: [] for iid in images}
    seen_ann = set()
    skipped = {}
    skipped_masks = {}

    def skip(reason, ann):
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("%s: skipping annotation %s of image %s: %s", json_path, ann.get("id"),
                    ann.get("image_id"), reason)

    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotation entry {i}"
        _require(ann, ("id", "image_id", "category_id", "bbox"), where)
        for key in ("id", "image_id", "category_id"):
            if not _is_int(ann[key]):
                raise DatasetError(f"{where} has {key} {_shown(ann[key])} "
                                   f"({type(ann[key]).__name__}); it must be a 64-bit integer")
        bbox = ann["bbox"]
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(_is_number(v) or v is None for v in bbox)):
            raise DatasetError(f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) "
                               f"has bbox {_shown(bbox)}; expected [x, y, width, height]")
        for key in ("iscrowd", "area"):
            value = ann.get(key, 0)
            if not (_is_number(value) and (key == "area" or value in (0, 1))):
                raise DatasetError(
                    f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) has {key} "
                    f"{_shown(value)}; expected " + ("0 or 1" if key == "iscrowd" else "a number"))
        if ann["id"] in seen_ann:
            raise DatasetError(f"{json_path}: duplicate annotation id {ann['id']}")
        seen_ann.add(ann["id"])
        if ann["image_id"] not in images:
            raise DatasetError(f"{json_path}: annotation {ann['id']} refers to image id "
                               f"{ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in index_of:
            raise DatasetError(f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) has "
                               f"category id {ann['category_id']}, which is not in "
                               + ("'categories'" if categories is None else
                                  "the training split's categories (val shares train's classes)"))
        crowd_flag = bool(ann.get("iscrowd", 0))
        if crowd_flag and crowd == "drop":
            continue
        img = images[ann["image_id"]]
        x, y, w, h = (float("nan") if v is None else _float(v) for v in ann["bbox"])
        if not np.all(np.isfinite([x, y, w, h])):
            skip("non-finite box", ann)
            continue
        y0, x0 = max(y, 0.0), max(x, 0.0)
        y1, x1 = min(y + h, float(img["height"])), min(x + w, float(img["width"]))
        if y1 - y0 <= 0 or x1 - x0 <= 0:
            skip("empty box (zero size or outside the image)", ann)
            continue
        segmentation = ann.get("segmentation")
        problem = None if crowd_flag else segmentation_problem(segmentation, int(img["height"]),
                                                               int(img["width"]))
        if problem:
            skipped_masks[problem] = skipped_masks.get(problem, 0) + 1
            if segmentation is not None:  # a boxes-only dataset is not warned per annotation
                log.warning("%s: annotation %s of image %s: %s; its mask is skipped, its box "
                            "kept", json_path, ann["id"], ann["image_id"], problem)
            segmentation = None
        per_image[ann["image_id"]].append(
            (ann["id"], [y0, x0, y1, x1], index_of[ann["category_id"]], crowd_flag, segmentation))

    records = []
    for iid in sorted(images):
        img = images[iid]
        anns = per_image[iid]
        records.append(ImageRecord(
            image_id=int(iid), path=os.path.join(image_dir, img["file_name"]),
            height=int(img["height"]), width=int(img["width"]),
            boxes=np.array([a[1] for a in anns], np.float32).reshape(-1, 4),
            classes=np.array([a[2] for a in anns], np.int32),
            is_crowd=np.array([a[3] for a in anns], bool),
            ann_ids=np.array([a[0] for a in anns], np.int64),
            segmentations=[a[4] for a in anns]))
    if not records:
        raise DatasetError(f"{json_path} has no images")
    if skipped:
        log.warning("%s: skipped %d annotations: %s", json_path, sum(skipped.values()), skipped)
    if set(skipped_masks) == {"no segmentation"} and not any(
            a[4] is not None for anns in per_image.values() for a in anns):
        skipped_masks = {}  # a boxes-only dataset: nothing is missing (summary: "boxes only")
    if skipped_masks:
        log.warning("%s: %d annotations have no usable mask (boxes kept): %s", json_path,
                    sum(skipped_masks.values()), skipped_masks)
    return CocoDataset(json_path, image_dir, records, class_ids,
                       [_name(c) for c in cats], skipped, skipped_masks)


def _name(category):
    name = category.get("name", category["id"])
    return name if isinstance(name, str) else str(name)
