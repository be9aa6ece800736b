"""The built-in dataset: generated pictures of textured shapes, written as real COCO files.

Deterministic from a seed: the same parameters always give byte-identical JSON
and images. Files go to ``<cache_dir>/shapes-<hash>/`` (``images/{train,val}/``,
``train.json``, ``val.json``) so they flow through the same reader as any
user's dataset. What makes it a real test of a detector:

* 5 classes told apart by outline only (colour and texture are random per object);
* sizes from ``min_object_size`` px to most of the image (log-uniform);
* boxes and ellipses with aspect ratios up to 1:6, where best matching matters;
* up to ``max_objects`` objects per image, later ones partly hiding earlier
  ones (at most half of any object is hidden); masks and boxes are of the
  visible part, as in COCO;
* textured, noisy backgrounds and unlabelled distractor strokes and dots.

Unoccluded objects are annotated with their polygon; occluded ones with the
compressed RLE of their visible pixels (both are standard COCO).
"""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("box", "ellipse", "triangle", "cross", "star")
ELONGATED = {"box", "ellipse"}
MAX_ASPECT = 6.0
MIN_VISIBLE_FRACTION = 0.5
_VERSION = 2  # bump when the generator's output changes


def _background(rng, size):
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(size, dtype=np.float32) / size
    t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    blobs = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR)
    img = 0.7 * img + 0.3 * np.asarray(blobs, np.float32)
    return img + rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(4, 14)


def _draw_distractors(rng, img, size):
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(2, 9)):
        color = tuple(int(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:  # a thin stroke
            pts = [tuple(rng.uniform(0, size, 2)) for _ in range(rng.integers(2, 5))]
            draw.line(pts, fill=color, width=int(rng.integers(1, 4)))
        elif kind == 1:  # a small dot
            c, r = rng.uniform(0, size, 2), rng.uniform(1.5, 4)
            draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=color)
        else:  # an arc
            c, r = rng.uniform(0, size, 2), rng.uniform(8, size / 3)
            a0 = rng.uniform(0, 360)
            draw.arc([c[0] - r, c[1] - r, c[0] + r, c[1] + r], a0, a0 + rng.uniform(40, 200),
                     fill=color, width=int(rng.integers(1, 3)))
    return np.asarray(pil, np.float32)


def _outline(name, cy, cx, h, w, rng):
    """Polygon [(x, y), ...] of a shape centred at (cy, cx) inside an h x w box."""
    y0, x0, y1, x1 = cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2
    if name == "box":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if name == "ellipse":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return list(zip(cx + w / 2 * np.cos(t), cy + h / 2 * np.sin(t)))
    if name == "triangle":
        if rng.random() < 0.5:
            return [(cx, y0), (x1, y1), (x0, y1)]
        return [(x0, y0), (x1, y0), (cx, y1)]
    if name == "cross":
        ty, tx = h * 0.17, w * 0.17
        return [(cx - tx, y0), (cx + tx, y0), (cx + tx, cy - ty), (x1, cy - ty), (x1, cy + ty),
                (cx + tx, cy + ty), (cx + tx, y1), (cx - tx, y1), (cx - tx, cy + ty),
                (x0, cy + ty), (x0, cy - ty), (cx - tx, cy - ty)]
    if name == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return list(zip(cx + w / 2 * r * np.cos(t), cy + h / 2 * r * np.sin(t)))
    raise ValueError(name)


def _texture(rng, h, w, color):
    """An h x w x 3 float texture around ``color``."""
    kind = rng.integers(4)
    base = np.broadcast_to(color.astype(np.float32), (h, w, 3))
    if kind == 0:
        return base + rng.standard_normal((h, w, 3), dtype=np.float32) * 6.0
    other = np.clip(color + rng.choice([-1, 1], 3) * rng.uniform(50, 110, 3), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(4, 12)
    if kind == 1:  # stripes
        a = rng.uniform(0, np.pi)
        sel = (np.cos(a) * xx + np.sin(a) * yy) % period < period / 2
    elif kind == 2:  # checker
        sel = ((xx // period + yy // period) % 2).astype(bool)
    else:  # speckle
        sel = rng.random((h, w)) < 0.35
    return np.where(sel[..., None], other.astype(np.float32), base) + \
        rng.standard_normal((h, w, 3), dtype=np.float32) * 4.0


def _rasterize(poly, size):
    from pycocotools import mask as mask_utils
    flat = [float(v) for xy in poly for v in xy]
    rle = mask_utils.frPyObjects([flat], size, size)
    return mask_utils.decode(rle)[..., 0].astype(bool)


def _sample_object(rng, size, min_size):
    name = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
    s = float(np.exp(rng.uniform(np.log(min_size), np.log(0.7 * size))))
    if name in ELONGATED and rng.random() < 0.35:
        aspect = rng.uniform(2.5, MAX_ASPECT)
    else:
        aspect = rng.uniform(1.0, 1.5)
    if rng.random() < 0.5:
        aspect = 1.0 / aspect
    h = min(s * np.sqrt(aspect), 0.95 * size)
    w = min(s / np.sqrt(aspect), 0.95 * size)
    h, w = max(h, min_size / 2), max(w, min_size / 2)
    cy = rng.uniform(h / 2, size - h / 2)
    cx = rng.uniform(w / 2, size - w / 2)
    # Rounded as written to the JSON, so that the annotation rasterises to the drawn pixels.
    return name, [(round(float(x), 2), round(float(y), 2)) for x, y in _outline(name, cy, cx, h, w, rng)]


def _bounds(mask):
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    y0, y1 = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
    x0, x1 = np.argmax(cols), len(cols) - np.argmax(cols[::-1])
    return int(y0), int(y1), int(x0), int(x1)


def _hides_too_much(objects, mask, box):
    """Whether ``mask`` would hide more than the allowed part of an earlier object."""
    y0, y1, x0, x1 = box
    for o in objects:
        oy0, oy1, ox0, ox1 = o["box"]
        iy0, iy1, ix0, ix1 = max(y0, oy0), min(y1, oy1), max(x0, ox0), min(x1, ox1)
        if iy0 >= iy1 or ix0 >= ix1:
            continue
        hidden = (o["visible"][iy0:iy1, ix0:ix1] & mask[iy0:iy1, ix0:ix1]).sum()
        if o["visible_area"] - hidden < MIN_VISIBLE_FRACTION * o["full_area"]:
            return True
    return False


def generate_image(rng, size, max_objects, min_object_size):
    """One picture and its objects.

    Returns:
      (image [size, size, 3] uint8, objects): each object a dict with
      ``class_index``, ``polygon`` ([(x, y), ...]), ``full`` and ``visible``
      [size, size] bool masks.
    """
    img = _draw_distractors(rng, _background(rng, size), size)
    objects = []
    target = int(rng.integers(1, max_objects + 1))
    tries = 0
    while len(objects) < target and tries < target * 20:
        tries += 1
        name, poly = _sample_object(rng, size, min_object_size)
        mask = _rasterize(poly, size)
        area = int(mask.sum())
        if area < 0.3 * min_object_size ** 2:
            continue
        box = _bounds(mask)
        if _hides_too_much(objects, mask, box):
            continue
        y0, y1, x0, x1 = box
        for o in objects:
            hidden = o["visible"][y0:y1, x0:x1] & mask[y0:y1, x0:x1]
            if hidden.any():
                o["visible"][y0:y1, x0:x1] &= ~hidden
                o["visible_area"] -= int(hidden.sum())
        objects.append({"class_index": CLASS_NAMES.index(name), "polygon": poly, "box": box,
                        "full": mask, "visible": mask.copy(), "full_area": area,
                        "visible_area": area})
        m = mask[y0:y1, x0:x1, None]
        crop = img[y0:y1, x0:x1]
        local_bg = crop[m[..., 0]].mean(axis=0)
        color = rng.uniform(0, 255, 3)
        for _ in range(10):  # keep the object distinguishable from what is under it
            if np.abs(color - local_bg).sum() > 120:
                break
            color = rng.uniform(0, 255, 3)
        img[y0:y1, x0:x1] = np.where(m, _texture(rng, y1 - y0, x1 - x0, color), crop)
    img += rng.standard_normal(img.shape, dtype=np.float32) * 3.0
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _annotation(obj, ann_id, image_id):
    from pycocotools import mask as mask_utils
    vis = obj["visible"]
    y0, y1, x0, x1 = _bounds(vis)
    bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    if obj["visible_area"] == obj["full_area"]:
        seg = [[v for xy in obj["polygon"] for v in xy]]
    else:
        rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
        seg = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {"id": ann_id, "image_id": image_id, "category_id": obj["class_index"] + 1,
            "bbox": bbox, "area": float(obj["visible_area"]), "iscrowd": 0, "segmentation": seg}


def _write_split(root, split, count, size, max_objects, min_object_size, seed, split_index):
    os.makedirs(os.path.join(root, "images", split), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, split_index, i, _VERSION])
        img, objects = generate_image(rng, size, max_objects, min_object_size)
        image_id = i + 1
        name = f"{split}_{image_id:06d}.jpg"
        Image.fromarray(img).save(os.path.join(root, "images", split, name), quality=92)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
        for obj in objects:
            annotations.append(_annotation(obj, len(annotations) + 1, image_id))
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    with open(os.path.join(root, f"{split}.json"), "w") as f:
        json.dump({"info": {"description": "retinamask_tf built-in shapes", "version": _VERSION},
                   "images": images, "annotations": annotations, "categories": categories}, f)


def dataset_dir(cache_dir, num_train, num_val, image_size, max_objects, min_object_size, seed):
    key = json.dumps([num_train, num_val, image_size, max_objects, min_object_size, seed, _VERSION])
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return os.path.join(os.path.expanduser(cache_dir), f"shapes-{digest}")


def ensure_dataset(cache_dir="~/.cache/retinamask_tf", num_train=1600, num_val=200, image_size=256,
                   max_objects=15, min_object_size=12.0, seed=0, progress=True):
    """Generates the dataset once (atomically) and returns its folder.

    Returns:
      dict with ``root``, ``train_json``, ``train_images``, ``val_json``, ``val_images``.
    """
    root = dataset_dir(cache_dir, num_train, num_val, image_size, max_objects, min_object_size, seed)
    paths = {"root": root,
             "train_json": os.path.join(root, "train.json"),
             "train_images": os.path.join(root, "images", "train"),
             "val_json": os.path.join(root, "val.json"),
             "val_images": os.path.join(root, "images", "val")}
    if os.path.exists(os.path.join(root, "DONE")):
        return paths
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-shapes-", dir=parent)
    try:
        if progress:
            print(f"Generating the built-in dataset ({num_train} train + {num_val} val images, "
                  f"{image_size}x{image_size}) into {root} ...", flush=True)
        _write_split(tmp, "train", num_train, image_size, max_objects, min_object_size, seed, 0)
        _write_split(tmp, "val", num_val, image_size, max_objects, min_object_size, seed, 1)
        with open(os.path.join(tmp, "DONE"), "w") as f:
            f.write("ok\n")
        if os.path.exists(os.path.join(root, "DONE")):  # another process finished first
            return paths
        if os.path.exists(root):  # an earlier, interrupted run
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not os.path.exists(os.path.join(root, "DONE")):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return paths
