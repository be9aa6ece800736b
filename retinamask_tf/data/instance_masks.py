"""Rasterises COCO segmentations into box-frame masks (see ``ops.masks``).

Polygons are transformed into the ``S x S`` frame of their box and rasterised
there by pycocotools (no full-image mask is ever made). RLE masks are decoded at
image size and sampled at the frame's cell centres (nearest pixel). Datasets hold their
segmentations packed (``data.segmentations``); ``rasterize_instances`` unpacks them.
"""

import numpy as np

from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.segmentations import unpack


def box_frame_mask(segmentation, box, height, width, size):
    """One segmentation -> [size, size] uint8 mask in the frame of ``box``.

    Args:
      segmentation: polygons (flat [x, y, ...] lists or arrays) or an RLE dict.
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


def rasterize_instances(segmentations, boxes, height, width, size, image_id=-1):
    """All instances of one image (the tf.data ``numpy_function`` body).

    Args:
      segmentations: [M] bytes, one packed segmentation per GT row
        (``segmentations.unpack``; ``b""`` for padding rows and unusable masks).
      boxes: [M, 4] float32 yxyx original pixels.
      height, width: image size; size: S; image_id: named in errors.
    Returns:
      [M, S, S] uint8; rows without a segmentation are all zero.
    """
    height, width, size = int(height), int(width), int(size)
    out = np.zeros((len(boxes), size, size), np.uint8)
    for i, data in enumerate(segmentations):
        try:
            seg = unpack(data)
            if seg is not None:
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
