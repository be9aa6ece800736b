"""COCO-sized instances JSONs for the data-scale benchmark (``bench/data_scale.py``).

``write_coco_like(path, image_dir, real_images, num_images, ...)`` writes a COCO instances
file shaped like train2017: 80 categories with COCO's non-contiguous ids, about 7.3
annotations per image with a tail of crowded images (up to 93, as in COCO), polygons whose
vertex counts follow a long-tailed distribution (median 18 vertices, a few hundred at the
tail), 1% of images without annotations, 1% crowd regions stored as uncompressed RLE (as
COCO stores them), COCO's key order and its compact separators. Every image entry points
at its own symbolic link to one of a few real images (``real_images``: [(path, height,
width)]), so that per-file work (the image check) is paid per entry, as on real data.
``longest_image_kb`` gives image 1 that many KB of extra polygon text (the growth check:
doubling only the longest image's text must leave memory alone).
"""

import json
import os

import numpy as np

# COCO's 80 category ids (1..90 with gaps).
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _annotation_counts(rng, n):
    """Annotations per image: 1% none, 1% crowded (30-93), the rest geometric around 6.7."""
    counts = np.minimum(rng.geometric(1 / 7.0, n), 29)
    crowded = rng.random(n) < 0.01
    counts[crowded] = rng.integers(30, 94, crowded.sum())
    counts[rng.random(n) < 0.01] = 0
    return counts


def _polygon(rng, box, vertices):
    """[x, y, ...] rounded to 2 decimals: ``vertices`` points on a jittered ellipse in box."""
    x0, y0, bw, bh = box
    t = np.sort(rng.random(vertices)) * 2 * np.pi
    r = 0.5 * (0.75 + 0.25 * rng.random(vertices))
    xs = x0 + bw * (0.5 + r * np.cos(t))
    ys = y0 + bh * (0.5 + r * np.sin(t))
    return np.round(np.stack([xs, ys], 1).reshape(-1), 2).tolist()


def _rectangle_rle(box, height, width):
    """Uncompressed column-major RLE of a box's pixels (how COCO stores crowd regions)."""
    x0, y0, bw, bh = (int(v) for v in box)
    x1, y1 = min(width, x0 + max(bw, 1)), min(height, y0 + max(bh, 1))
    counts, pos = [], 0
    for x in range(x0, x1):
        start = x * height + y0
        counts += [start - pos, y1 - y0]
        pos = start + y1 - y0
    counts.append(height * width - pos)
    return {"counts": counts, "size": [height, width]}


def write_coco_like(path, image_dir, real_images, num_images, seed=0, longest_image_kb=0):
    """Writes the JSON and ``num_images`` symlinks in ``image_dir``; returns a summary dict
    (images, annotations, bytes, polygon text of the median and the longest image)."""
    rng = np.random.default_rng(seed)
    os.makedirs(image_dir, exist_ok=True)
    counts = _annotation_counts(rng, num_images)
    ann_id, per_image_text = 1, np.zeros(num_images, np.int64)
    with open(path, "w") as f:
        f.write('{"info":{"description":"COCO-sized synthetic instances"},"licenses":[],'
                '"images":[')
        for i in range(num_images):
            real, height, width = real_images[i % len(real_images)]
            name = f"{i + 1:012d}.jpg"
            link = os.path.join(image_dir, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(real), link)
            f.write(("," if i else "") + json.dumps(
                {"license": 1, "file_name": name, "height": height, "width": width,
                 "id": i + 1}, separators=(",", ":")))
        f.write('],"annotations":[')
        first = True
        for i in range(num_images):
            _, height, width = real_images[i % len(real_images)]
            for _ in range(counts[i]):
                bw = float(np.clip(width * np.exp(rng.normal(-1.8, 0.9)), 4, width))
                bh = float(np.clip(height * np.exp(rng.normal(-1.8, 0.9)), 4, height))
                box = [round(float(rng.random() * (width - bw)), 2),
                       round(float(rng.random() * (height - bh)), 2), round(bw, 2), round(bh, 2)]
                crowd = rng.random() < 0.01
                if crowd:
                    seg = _rectangle_rle(box, height, width)
                else:
                    vertices = int(np.clip(np.exp(rng.normal(np.log(18), 0.75)), 3, 600))
                    parts = 1 if rng.random() < 0.85 else int(rng.integers(2, 5))
                    parts = min(parts, vertices // 3)
                    cuts = np.linspace(0, vertices, parts + 1).astype(int)
                    seg = [_polygon(rng, box, b - a) for a, b in zip(cuts[:-1], cuts[1:])
                           if b - a >= 3]
                    if i == 0 and first and longest_image_kb:  # its own generator: the
                        # rest of the file stays the same whatever the size given here
                        seg = [_polygon(np.random.default_rng(seed + 1), box,
                                        longest_image_kb * 1024 // 14)]
                text = json.dumps(
                    {"segmentation": seg, "area": round(bw * bh * 0.7, 2), "iscrowd": int(crowd),
                     "image_id": i + 1, "bbox": box, "category_id": int(rng.choice(COCO_IDS)),
                     "id": ann_id}, separators=(",", ":"))
                per_image_text[i] += len(text)
                f.write(("" if first else ",") + text)
                first, ann_id = False, ann_id + 1
        f.write('],"categories":' + json.dumps(
            [{"supercategory": "thing", "id": c, "name": f"class_{c}"} for c in COCO_IDS],
            separators=(",", ":")) + "}")
    return {"images": int(num_images), "annotations": int(ann_id - 1),
            "bytes": os.path.getsize(path),
            "median_image_annotation_text": int(np.median(per_image_text)),
            "longest_image_annotation_text": int(per_image_text.max()),
            "max_annotations_per_image": int(counts.max())}
