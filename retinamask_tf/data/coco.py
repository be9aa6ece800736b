"""COCO instances JSON reader.

Produces one ``ImageRecord`` per image with boxes in yxyx absolute pixels of the
original image and contiguous class indices. Category ids may be any integers
(COCO's run 1..90 with gaps); ``CocoDataset.class_ids`` maps the contiguous
index back to the dataset's own id, which results files use.
"""

import contextlib
import dataclasses
import gc
import json
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from retinamask_tf.data.coco_annotations import (is_int, positive_int, read_annotations,
                                                  require, shown)
from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.segmentations import SegmentationView

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
    # n packed segmentations (bytes, ``data.segmentations``; None: no usable mask): a view
    # into the dataset's ``PackedStore``, or a list.
    segmentations: Sequence
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
    masks_read: bool = True  # False: segmentations were not read (``load_coco(masks=False)``)

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
        from retinamask_tf.data import coco_tensors
        self.truncated = coco_tensors.truncated_images(self.records, max_instances)
        for image_id, path, count in self.truncated[:20]:
            log.warning("%s: image %d (%s) has %d annotations; kept the %d largest "
                        "(data.max_instances)", self.json_path, image_id, path, count,
                        max_instances)
        if self.truncated:
            log.warning("%s: %d images have more than data.max_instances=%d annotations: %d "
                        "annotations left out%s", self.json_path, len(self.truncated),
                        max_instances, sum(c - max_instances for _, _, c in self.truncated),
                        " (the first 20 named above)" if len(self.truncated) > 20 else "")
        return coco_tensors.records_to_dataset(self.records, max_instances, with_masks)

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
        elif not self.masks_read:
            parts.append("masks not read")
        elif not self.has_masks:
            parts.append("boxes only (no segmentations)")
        return "; ".join(parts)


def categories(dataset) -> List[dict]:
    """``[{"id", "name"}]`` of a dataset's classes in contiguous-index order (any source
    with ``class_ids`` and ``class_names``): the ``categories`` argument of ``load_coco``
    that makes another split share its class mapping, or a COCO file's section."""
    return [{"id": int(i), "name": n} for i, n in zip(dataset.class_ids, dataset.class_names)]


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
    del raw  # the file's bytes are not needed while parsing (COCO train: 450 MB)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_path} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise DatasetError(f"{json_path} is nested too deeply to be a COCO file") from e


def load_coco(json_path: str, image_dir: str, crowd: str = "drop",
              categories: Optional[List[dict]] = None, masks: bool = True) -> CocoDataset:
    """Reads a COCO instances JSON.

    Args:
      json_path: the annotations file.
      image_dir: folder the images' ``file_name`` are relative to.
      crowd: "drop" (released code: crowd annotations removed) or "ignore"
        (kept, flagged in ``is_crowd``; the matcher ignores anchors inside them).
      categories: category list to use for the class mapping (pass the train
        split's so that train and val share one mapping); default: this file's.
      masks: False: segmentations are neither checked nor kept (every record's are None;
        training without the mask head, evaluation, which reads masks from the JSON).
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
    with _gc_paused():
        return _load(json_path, image_dir, crowd, categories, masks)


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused: parsing a COCO file makes millions of
    lists and dicts (none in a cycle), and the collections they trigger scan the whole
    growing heap again and again (train2017-sized: 11 s to parse with them, 5 s without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(json_path, image_dir, crowd, categories, masks):
    data = _read_json(json_path)
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{json_path} is not a COCO instances file: it needs the keys "
                           "'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    if categories is None:
        for i, cat in enumerate(data["categories"]):
            require(cat, ("id",), f"{json_path}: category entry {i}")
            if not is_int(cat["id"], bits=32):
                raise DatasetError(f"{json_path}: category entry {i} has id {shown(cat['id'])} "
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
        require(img, ("id", "file_name", "height", "width"), where)
        if not is_int(img["id"]):
            raise DatasetError(f"{where} has id {shown(img['id'])} "
                               f"({type(img['id']).__name__}); image ids must be 64-bit integers")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(f"{where} (id {img['id']}) has file_name "
                               f"{shown(img['file_name'])}; expected a non-empty string")
        if not (positive_int(img["height"]) and positive_int(img["width"])):
            raise DatasetError(f"{json_path}: image {img['id']} ({shown(img['file_name'], quote=False)}) has "
                               f"height {shown(img['height'])} and width {shown(img['width'])}; "
                               "both must be positive integers")
        if img["id"] in images:
            raise DatasetError(f"{json_path}: duplicate image id {img['id']}")
        images[img["id"]] = img
    annotations = read_annotations(data["annotations"], json_path, images, index_of,
                                    crowd, categories is not None, masks)
    del data  # the parsed file: what the records keep is packed
    records = _records(annotations, images, image_dir)
    if not records:
        raise DatasetError(f"{json_path} has no images")
    skipped, skipped_masks = annotations["skipped"], annotations["skipped_masks"]
    if skipped:
        log.warning("%s: skipped %d annotations: %s", json_path, sum(skipped.values()), skipped)
    if skipped_masks:
        log.warning("%s: %d annotations have no usable mask (boxes kept): %s", json_path,
                    sum(skipped_masks.values()), skipped_masks)
    return CocoDataset(json_path, image_dir, records, class_ids,
                       [_name(c) for c in cats], skipped, skipped_masks, masks_read=masks)


def _records(cols, images, image_dir):
    """One ``ImageRecord`` per image, in image id order, its annotations in file order."""
    order = sorted(images)
    row_of = {iid: r for r, iid in enumerate(order)}
    rows = np.fromiter((row_of[i] for i in cols["image_id"]), np.int64, len(cols["image_id"]))
    by_image = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=len(order))
    ends = np.cumsum(counts)
    starts = ends - counts
    boxes = np.asarray(cols["box"], np.float32).reshape(-1, 4)[by_image]
    classes = np.asarray(cols["cls"], np.int32)[by_image]
    crowd = np.asarray(cols["crowd"], bool)[by_image]
    ann_ids = np.asarray(cols["ann_id"], np.int64)[by_image]
    store = cols["segmentation"]
    records = []
    for r, iid in enumerate(order):
        img, a, b = images[iid], starts[r], ends[r]
        records.append(ImageRecord(
            image_id=int(iid), path=os.path.join(image_dir, img["file_name"]),
            height=int(img["height"]), width=int(img["width"]), boxes=boxes[a:b],
            classes=classes[a:b], is_crowd=crowd[a:b], ann_ids=ann_ids[a:b],
            segmentations=SegmentationView(store, by_image[a:b])))
    return records


def _name(category):
    name = category.get("name", category["id"])
    return name if isinstance(name, str) else str(name)
