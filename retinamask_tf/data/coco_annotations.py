"""A COCO instances file's entries: value checks that name the file and entry, and the
annotations read into columns (``read_annotations``), their segmentations packed.

The checks are quick type tests on each entry (860k COCO annotations in seconds); an entry
that fails them is looked at again by the full checks, which say what is wrong.
"""

import logging
import math

from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.segmentations import NUMBER_TYPES, PackedStore, as_float, pack_all

log = logging.getLogger(__name__)


def require(entry, keys, where):
    """Raises a DatasetError naming ``where`` unless ``entry`` is an object with ``keys``."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is not an object: {shown(entry, 200)}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{where} (id {shown(entry.get('id'))}) lacks "
                           f"{', '.join(map(repr, missing))}")


def positive_int(value):
    """An integer > 0 that fits 64 bits (not a bool)."""
    return is_int(value) and value > 0


def is_int(value, bits=64):
    """An integer (not a bool) that fits a signed integer of ``bits`` (image and annotation
    ids travel as int64 tensors, category ids as int32 in the exported models)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and -2 ** (bits - 1) <= value < 2 ** (bits - 1))


def is_number(value):
    """A JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value, limit=100, quote=True):
    """A value for an error message: short, and printable whatever its characters."""
    text = repr(value) if quote or not isinstance(value, str) else value
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


PACK_EVERY = 65536  # segmentations packed at a time while the annotations are read
_BOX_VALUE_TYPES = frozenset((int, float, type(None)))  # JSON numbers or null (bool is not)
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _reject_annotation(ann, i, json_path, images, index_of, shared_categories):
    """Raises the DatasetError that names what is wrong with annotation entry ``i`` (called
    once the quick checks in ``read_annotations`` failed; a duplicate id is raised there)."""
    where = f"{json_path}: annotation entry {i}"
    require(ann, ("id", "image_id", "category_id", "bbox"), where)
    for key in ("id", "image_id", "category_id"):
        if not is_int(ann[key]):
            raise DatasetError(f"{where} has {key} {shown(ann[key])} "
                               f"({type(ann[key]).__name__}); it must be a 64-bit integer")
    bbox = ann["bbox"]
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(is_number(v) or v is None for v in bbox)):
        raise DatasetError(f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) "
                           f"has bbox {shown(bbox)}; expected [x, y, width, height]")
    for key in ("iscrowd", "area"):
        value = ann.get(key, 0)
        if not (is_number(value) and (key == "area" or value in (0, 1))):
            raise DatasetError(
                f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) has {key} "
                f"{shown(value)}; expected " + ("0 or 1" if key == "iscrowd" else "a number"))
    if ann["image_id"] not in images:
        raise DatasetError(f"{json_path}: annotation {ann['id']} refers to image id "
                           f"{ann['image_id']}, which is not in 'images'")
    if ann["category_id"] not in index_of:
        raise DatasetError(f"{json_path}: annotation {ann['id']} (image {ann['image_id']}) has "
                           f"category id {ann['category_id']}, which is not in "
                           + ("the training split's categories (val shares train's classes)"
                              if shared_categories else "'categories'"))
    raise AssertionError(f"{where} failed a quick check that the full check passes")


def read_annotations(anns, json_path, images, index_of, crowd, shared_categories, masks):
    """Checks every annotation and keeps the usable ones, in columns (file order).

    Each entry is checked with a few type tests (860k COCO annotations in seconds); one
    that fails them goes to ``_reject_annotation`` for the message. Segmentations are
    checked and packed in bulk (``segmentations.pack_all``), ``PACK_EVERY`` at a time.
    ``anns`` is consumed: each entry is set to None once read, so that the parsed file's
    memory is given back while the packed annotations grow (the peak stays the parse's).
    Returns:
      dict of ann_id, image_id, box (yxyx, clipped), cls, crowd (lists), segmentation (a
      ``PackedStore`` in the same order), skipped and skipped_masks (reason -> count).
    """
    cols = {k: [] for k in ("ann_id", "image_id", "box", "cls", "crowd")}
    skipped = {}
    seen = set()
    lo, hi = _INT64

    def skip(reason, ann):
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("%s: skipping annotation %s of image %s: %s", json_path, ann.get("id"),
                    ann.get("image_id"), reason)

    store, skipped_masks, raw = PackedStore(), {}, []

    def pack():
        first = len(cols["ann_id"]) - len(raw)
        store.add(_pack_masks(raw, first, cols, images, json_path, skipped_masks))
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
                and type(is_crowd) in NUMBER_TYPES and (is_crowd == 0 or is_crowd == 1)
                and type(area) in NUMBER_TYPES and img is not None and cls is not None):
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
            x, y, w, h = (float("nan") if v is None else as_float(v) for v in bbox)
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
        if set(skipped_masks) == {"no segmentation"} and not store.has_mask(slice(None)).any():
            skipped_masks = {}  # a boxes-only dataset: nothing is missing ("boxes only")
    else:
        store.add([None] * len(cols["ann_id"]))
    cols.update(segmentation=store, skipped=skipped, skipped_masks=skipped_masks)
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
