"""Rasterises COCO segmentations into box-frame masks (see ``ops.masks``).

Polygons are transformed into the ``S x S`` frame of their box and rasterised
there by pycocotools (no full-image mask is ever made). RLE masks are decoded at
image size and sampled at the frame's cell centres (nearest pixel).
"""

import json

import numpy as np

from retinamask_tf.data.errors import DatasetError


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value):
    """A non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def polygon_problem(segmentation, height=None, width=None):
    """Why a polygon segmentation is unusable (None when it is fine): no polygon
    with >= 3 points, an odd coordinate count, non-finite values, coordinates far outside
    an image of (height, width) (pycocotools' rasteriser walks every pixel of each edge:
    a coordinate of 2**31 would take all memory) or zero area."""
    if not segmentation:
        return "empty polygon list"
    polys = []
    for poly in segmentation:
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            return "polygon that is not a list of numbers"
        try:
            arr = np.asarray(poly, np.float64)
        except OverflowError:  # an integer beyond float range
            return "polygon with non-finite coordinates"
        if arr.ndim != 1 or arr.size % 2:
            return "polygon with an odd number of coordinates"
        if not np.all(np.isfinite(arr)):
            return "polygon with non-finite coordinates"
        if height is not None and np.abs(arr).max(initial=0) > 4 * max(height, width) + 64:
            return "polygon far outside the image"
        if arr.size >= 6:
            polys.append(arr.reshape(-1, 2))
    if not polys:
        return "polygon with fewer than 3 points"
    area = sum(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))
               for p in polys)
    if area <= 0:
        return "polygon with zero area"
    return None


def compressed_rle_counts(counts):
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``: 5 bits
    per character from '0', a continuation bit, sign extension, counts after the second
    stored as differences), or a string saying why it is not one. pycocotools itself does
    not check: garbage decodes to a mask of whatever memory follows."""
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLE counts are not ASCII"
    out, x, k = [], 0, 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return f"RLE counts hold the character {ch!r} (not a compressed RLE string)"
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
        x, k = 0, 0
    if k:
        return "RLE counts string ends inside a number"
    return out


def rle_problem(segmentation, height, width):
    """Why an RLE segmentation is unusable for an image of (height, width), or None: another
    size, counts that are not non-negative integers summing to height x width."""
    size = segmentation.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_count(v) for v in size)
            or list(size) != [height, width]):
        return f"RLE size {size} differs from the image size {[height, width]}"
    counts = segmentation.get("counts")
    if isinstance(counts, (str, bytes)):
        counts = compressed_rle_counts(counts)
        if isinstance(counts, str):
            return counts
    elif not isinstance(counts, list):
        return "RLE without counts"
    if not all(_is_count(v) for v in counts):
        return "RLE counts that are not non-negative integers"
    if sum(counts) != height * width:
        return f"RLE counts sum to {sum(counts)}, not height x width = {height * width}"
    return None


def segmentation_problem(segmentation, height, width):
    """None if ``segmentation`` can be rasterised for an image of that size, else why not."""
    if segmentation is None:
        return "no segmentation"
    if isinstance(segmentation, list):
        return polygon_problem(segmentation, height, width)
    if isinstance(segmentation, dict):
        return rle_problem(segmentation, height, width)
    return f"unknown segmentation format {type(segmentation).__name__}"


def box_frame_mask(segmentation, box, height, width, size):
    """One segmentation -> [size, size] uint8 mask in the frame of ``box``.

    Args:
      segmentation: COCO polygons (list of flat [x, y, ...] lists) or RLE dict.
      box: yxyx pixels of the original image (the annotation's box).
      height, width: the original image size.
      size: S, cells per side.
    """
    from pycocotools import mask as mask_utils

    y0, x0, y1, x1 = (float(v) for v in box)
    bh, bw = max(y1 - y0, 1e-6), max(x1 - x0, 1e-6)
    if isinstance(segmentation, list):
        polys = []
        for poly in segmentation:
            p = np.asarray(poly, np.float64).reshape(-1, 2)
            if len(p) < 3:
                continue
            p = np.stack([(p[:, 0] - x0) * size / bw, (p[:, 1] - y0) * size / bh], 1)
            polys.append(p.reshape(-1).tolist())
        if not polys:
            return np.zeros((size, size), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, size, size))
        return mask_utils.decode(rle).astype(np.uint8)
    rle = segmentation
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, height, width)
    full = mask_utils.decode(rle)
    centres = (np.arange(size) + 0.5) / size
    rows = np.clip(np.floor(y0 + centres * bh), 0, height - 1).astype(np.int64)
    cols = np.clip(np.floor(x0 + centres * bw), 0, width - 1).astype(np.int64)
    return full[np.ix_(rows, cols)].astype(np.uint8)


def rasterize_instances(segmentations_json, boxes, height, width, size, image_id=-1):
    """All instances of one image (the tf.data ``numpy_function`` body).

    Args:
      segmentations_json: bytes, a JSON list with one entry per GT row (padding
        rows and unusable segmentations are null).
      boxes: [M, 4] float32 yxyx original pixels.
      height, width: image size; size: S; image_id: named in errors.
    Returns:
      [M, S, S] uint8; rows with a null segmentation are all zero.
    """
    segs = json.loads(segmentations_json.decode() if isinstance(segmentations_json, bytes)
                      else segmentations_json)
    height, width, size = int(height), int(width), int(size)
    out = np.zeros((len(boxes), size, size), np.uint8)
    for i, seg in enumerate(segs):
        if seg is not None:
            try:
                out[i] = box_frame_mask(seg, boxes[i], height, width, size)
            except Exception as e:  # pycocotools raises bare Exceptions on corrupt RLE strings
                raise DatasetError(f"image {int(image_id)}: cannot rasterise the segmentation of "
                                   f"GT row {i}: {e}") from e
    return out


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Rasterises a COCO segmentation (polygons, uncompressed or compressed RLE).

    Returns:
      [height, width] uint8 mask in {0, 1}.
    Raises:
      DatasetError: an RLE whose size is not (height, width), or an unknown format.
    """
    from pycocotools import mask as mask_utils  # heavy C extension, imported on use

    if isinstance(segmentation, list):
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise DatasetError(f"RLE size {segmentation['size']} differs from the image "
                               f"size {[height, width]}")
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
    else:
        raise DatasetError(f"unknown segmentation format: {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(np.uint8)
