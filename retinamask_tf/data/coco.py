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
import math
import os
from typing import List, Optional

import numpy as np

from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.segmentations import pack_all

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
    segmentations: list  # n packed segmentations (``data.segmentations``); None: no usable mask
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
    annotations = _read_annotations(data["annotations"], json_path, images, index_of,
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


_NUMBER = (int, float)
PACK_EVERY = 65536  # segmentations packed at a time while the annotations are read
_BOX_VALUE_TYPES = frozenset((int, float, type(None)))  # JSON numbers or null (bool is not)
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _reject_annotation(ann, i, json_path, images, index_of, shared_categories):
    """Raises the DatasetError that names what is wrong with annotation entry ``i`` (called
    once the quick checks in ``_read_annotations`` failed; a duplicate id is raised there)."""
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
    if ann["image_id"] not in images:
        raise DatasetError(f"{json_path}: annotation {ann['id']} refers to image id "
                           f"{ann['image_id']}, which is not in 'images'")
    if ann["category_id"] not in index_of:
        raise DatasetError(f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) has "
                           f"category id {ann['category_id']}, which is not in "
                           + ("the training split's categories (val shares train's classes)"
                              if shared_categories else "'categories'"))
    raise AssertionError(f"{where} failed a quick check that the full check passes")


def _read_annotations(anns, json_path, images, index_of, crowd, shared_categories, masks):
    """Checks every annotation and keeps the usable ones, in columns (file order).

    Each entry is checked with a few type tests (860k COCO annotations in seconds); one
    that fails them goes to ``_reject_annotation`` for the message. Segmentations are
    checked and packed in bulk (``segmentations.pack_all``), ``PACK_EVERY`` at a time.
    ``anns`` is consumed: each entry is set to None once read, so that the parsed file's
    memory is given back while the packed annotations grow (the peak stays the parse's).
    Returns:
      dict of ann_id, image_id, box (yxyx, clipped), cls, crowd (lists), segmentation
      (packed bytes or None), skipped and skipped_masks (reason -> count).
    """
    cols = {k: [] for k in ("ann_id", "image_id", "box", "cls", "crowd")}
    skipped = {}
    seen = set()
    lo, hi = _INT64

    def skip(reason, ann):
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("%s: skipping annotation %s of image %s: %s", json_path, ann.get("id"),
                    ann.get("image_id"), reason)

    packed, skipped_masks, raw = [], {}, []

    def pack():
        packed.extend(_pack_masks(raw, len(packed), cols, images, json_path, skipped_masks))
        raw.clear()

    add_ann_id, add_image_id, add_box, add_cls, add_crowd = (
        cols[k].append for k in ("ann_id", "image_id", "box", "cls", "crowd"))
    for i, ann in enumerate(anns):
        anns[i] = None
        try:
            aid, iid, cid, bbox = ann["id"], ann["image_id"], ann["category_id"], ann["bbox"]
            is_crowd, area = ann.get("iscrowd", 0), ann.get("area", 0)
            img, cls = images.get(iid), index_of.get(cid)
        except (KeyError, TypeError, AttributeError):  # not an object, or a key missing
            aid = img = None
        if not (type(aid) is int and type(iid) is int and type(cid) is int
                and lo <= aid <= hi and lo <= iid <= hi and lo <= cid <= hi
                and type(bbox) is list and len(bbox) == 4
                and _BOX_VALUE_TYPES.issuperset(map(type, bbox))
                and type(is_crowd) in _NUMBER and (is_crowd == 0 or is_crowd == 1)
                and type(area) in _NUMBER and img is not None and cls is not None):
            _reject_annotation(ann, i, json_path, images, index_of, shared_categories)
        n_seen = len(seen)
        seen.add(aid)
        if len(seen) == n_seen:
            raise DatasetError(f"{json_path}: duplicate annotation id {aid}")
        is_crowd = bool(is_crowd)
        if is_crowd and crowd == "drop":
            continue
        try:
            x, y, w, h = map(float, bbox)
        except (TypeError, OverflowError):  # a null, or an integer beyond float range
            x, y, w, h = (float("nan") if v is None else _float(v) for v in bbox)
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)):
            skip("non-finite box", ann)
            continue
        y0, x0 = max(y, 0.0), max(x, 0.0)
        y1, x1 = min(y + h, float(img["height"])), min(x + w, float(img["width"]))
        if y1 - y0 <= 0 or x1 - x0 <= 0:
            skip("empty box (zero size or outside the image)", ann)
            continue
        add_ann_id(aid)
        add_image_id(iid)
        add_box((y0, x0, y1, x1))
        add_cls(cls)
        add_crowd(is_crowd)
        if masks:
            raw.append(None if is_crowd else ann.get("segmentation"))
            if len(raw) == PACK_EVERY:
                pack()
    if masks:
        pack()
        if set(skipped_masks) == {"no segmentation"} and not any(d is not None for d in packed):
            skipped_masks = {}  # a boxes-only dataset: nothing is missing ("boxes only")
    cols.update(segmentation=packed if masks else [None] * len(cols["ann_id"]),
                skipped=skipped, skipped_masks=skipped_masks)
    return cols


def _pack_masks(raw, first, cols, images, json_path, skipped_masks):
    """The packed segmentation (or None) of each of ``raw``, the segmentations of the kept
    annotations ``first``, ``first + 1``, ...; counts the non-crowd ones without a usable
    mask in ``skipped_masks`` (reason -> count) and names each in a warning."""
    crowd, ann_ids, image_ids = (cols[k] for k in ("crowd", "ann_id", "image_id"))
    own = [j for j in range(len(raw)) if not crowd[first + j]]  # crowd regions: no masks
    sizes = [images[image_ids[first + j]] for j in own]
    packed, problems = pack_all([raw[j] for j in own], [img["height"] for img in sizes],
                                [img["width"] for img in sizes])
    out = [None] * len(raw)
    for j, data, problem in zip(own, packed, problems):
        out[j] = data
        if problem:
            skipped_masks[problem] = skipped_masks.get(problem, 0) + 1
            if raw[j] is not None:  # a boxes-only dataset is not warned per annotation
                log.warning("%s: annotation %s of image %s: %s; its mask is skipped, its box "
                            "kept", json_path, ann_ids[first + j], image_ids[first + j],
                            problem)
    return out


def _records(cols, images, image_dir):
    """One ``ImageRecord`` per image, in image id order, its annotations in file order."""
    order = sorted(images)
    row_of = {iid: r for r, iid in enumerate(order)}
    rows = np.fromiter((row_of[i] for i in cols["image_id"]), np.int64, len(cols["image_id"]))
    by_image = np.argsort(rows, kind="stable")
    ends = np.cumsum(np.bincount(rows, minlength=len(order)))
    starts = ends - np.bincount(rows, minlength=len(order))
    boxes = np.asarray(cols["box"], np.float32).reshape(-1, 4)[by_image]
    classes = np.asarray(cols["cls"], np.int32)[by_image]
    crowd = np.asarray(cols["crowd"], bool)[by_image]
    ann_ids = np.asarray(cols["ann_id"], np.int64)[by_image]
    segs = [cols["segmentation"][j] for j in by_image]
    records = []
    for r, iid in enumerate(order):
        img, a, b = images[iid], starts[r], ends[r]
        records.append(ImageRecord(
            image_id=int(iid), path=os.path.join(image_dir, img["file_name"]),
            height=int(img["height"]), width=int(img["width"]), boxes=boxes[a:b],
            classes=classes[a:b], is_crowd=crowd[a:b], ann_ids=ann_ids[a:b],
            segmentations=segs[a:b]))
    return records


def _name(category):
    name = category.get("name", category["id"])
    return name if isinstance(name, str) else str(name)
