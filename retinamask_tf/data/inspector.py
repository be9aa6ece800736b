"""Dataset inspector: what users look at when AP stays at 0 on their own data.

``inspect_dataset`` computes, in the model's input frame (boxes resized as the parser
resizes them, crowd boxes left out):
  * instances per class;
  * box size (sqrt of area, pixels) and aspect (log2 height / width) histograms;
  * anchor coverage exactly as training matches: the ground-truth boxes that get no
    positive anchor with the plain RetinaNet rule (IoU >= positive_threshold), and how
    many of them best matching rescues (RetinaMask's change 1, ``ops.matcher``);
and ``write_report`` writes stats.json, the plots (matplotlib, if installed) and drawings
of a few images with their boxes and masks.
"""

import json
import os

import numpy as np
import tensorflow as tf

from retinamask_tf.data import instance_masks
from retinamask_tf.data.segmentations import unpack
from retinamask_tf.ops.resize import resized_size
from retinamask_tf.image_io import read_rgb
from retinamask_tf.ops import anchors as anchor_ops
from retinamask_tf.ops import box_ops, matcher

SIZE_BINS = [0, 8, 16, 32, 64, 96, 128, 256, 512, 1024, 1e9]
ASPECT_BINS = [-1e9, -3, -2, -1, -0.5, 0.5, 1, 2, 3, 1e9]


def _hist(values, edges):
    """{"labels": one per bin ("lo-hi", "<x", ">=x" at open ends), "counts"}."""
    counts = np.histogram(values, edges)[0].tolist()
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= -1e8:
            labels.append(f"<{hi:g}")
        elif hi >= 1e8:
            labels.append(f">={lo:g}")
        else:
            labels.append(f"{lo:g}-{hi:g}")
    return {"labels": labels, "counts": counts}


def resized_boxes(record, short_side, long_side, image_size):
    """A record's non-crowd boxes [n, 4] yxyx in the model-input frame, and their indices."""
    new_h, new_w = resized_size(record.height, record.width, short_side, long_side, image_size)
    s = np.array([new_h / record.height, new_w / record.width] * 2, np.float32)
    keep = np.flatnonzero(~record.is_crowd)
    return record.boxes[keep] * s, keep


def _covered(iou, num_gt, best_match_threshold, m):
    matched, labels = matcher.match(iou, m.positive_threshold, m.negative_threshold,
                                    best_match_threshold)
    positive = labels.numpy() == matcher.POSITIVE
    covered = np.zeros(num_gt, bool)
    covered[np.unique(matched.numpy()[positive])] = True
    return covered


def inspect_dataset(dataset, config, max_images=None):
    """Statistics of a CocoDataset for ``config`` (image size, anchors, matcher).

    Returns:
      dict with num_images, num_boxes, per_class [{id, name, count}], size_hist and
      aspect_hist ({"bins", "counts"}), coverage {no_anchor_at_threshold,
      rescued_by_best_matching, uncovered, best_match_threshold}, max_iou_hist, and
      worst: the 20 boxes with the lowest best-anchor IoU (image id, annotation id,
      class, box in the original image, best IoU).
    """
    a = config.anchors
    anchors, _ = anchor_ops.generate_anchors(config.image_size, a.min_level, a.max_level,
                                             a.num_scales, tuple(a.aspect_ratios), a.anchor_scale,
                                             a.style)
    records = dataset.records[:max_images] if max_images else dataset.records
    m = config.matcher
    counts = np.zeros(dataset.num_classes, np.int64)
    sizes, aspects, best_ious, plain_cov, bm_cov, rows = [], [], [], [], [], []
    for r in records:
        boxes, keep = resized_boxes(r, config.data.short_side, config.data.long_side,
                                    config.image_size)
        if not len(boxes):
            continue
        np.add.at(counts, r.classes[keep], 1)
        h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sizes.append(np.sqrt(h * w))
        aspects.append(np.log2(h / w))
        iou = box_ops.pairwise_iou(anchors, tf.constant(boxes))  # [N, G]
        best = tf.reduce_max(iou, axis=0).numpy()
        best_ious.append(best)
        plain_cov.append(_covered(iou, len(boxes), None, m))
        bm_cov.append(_covered(iou, len(boxes), m.best_match_threshold, m)
                      if m.best_match_threshold is not None else plain_cov[-1])
        for j, k in enumerate(keep):
            rows.append((float(best[j]), int(r.image_id), int(r.ann_ids[k]),
                         dataset.class_names[r.classes[k]], r.boxes[k].round(1).tolist()))
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    sizes, aspects, best_ious = cat(sizes), cat(aspects), cat(best_ious)
    plain_cov, bm_cov = cat(plain_cov).astype(bool), cat(bm_cov).astype(bool)
    rows.sort(key=lambda row: row[0])
    return {
        "json": dataset.json_path, "num_images": len(records), "num_boxes": int(len(sizes)),
        "image_size": list(config.image_size),
        "per_class": [{"id": int(i), "name": n, "count": int(c)}
                      for i, n, c in zip(dataset.class_ids, dataset.class_names, counts)],
        "size_hist": _hist(sizes, SIZE_BINS),
        "aspect_hist": _hist(aspects, ASPECT_BINS),
        "max_iou_hist": _hist(best_ious, np.linspace(0, 1, 11).round(1).tolist()),
        "coverage": {
            "positive_threshold": m.positive_threshold,
            "best_match_threshold": m.best_match_threshold,
            "no_anchor_at_threshold": int((~plain_cov).sum()),
            "rescued_by_best_matching": int((~plain_cov & bm_cov).sum()),
            "uncovered": int((~bm_cov).sum()),
        },
        "worst": [{"best_iou": round(b, 3), "image_id": i, "ann_id": a_id, "class": c, "box": box}
                  for b, i, a_id, c, box in rows[:20]],
    }


def format_report(stats):
    """A short text summary of ``inspect_dataset``'s result."""
    cov = stats["coverage"]
    n = max(stats["num_boxes"], 1)
    lines = [f"{stats['json']}: {stats['num_images']} images, {stats['num_boxes']} boxes "
             f"(model input {stats['image_size'][0]}x{stats['image_size'][1]})",
             "instances per class: " + ", ".join(f"{c['name']} {c['count']}"
                                                  for c in stats["per_class"]),
             "box size sqrt(area) px: " + ", ".join(
                 f"{b}: {c}" for b, c in zip(stats["size_hist"]["labels"],
                                             stats["size_hist"]["counts"]) if c),
             f"boxes with no anchor at IoU >= {cov['positive_threshold']}: "
             f"{cov['no_anchor_at_threshold']} ({100 * cov['no_anchor_at_threshold'] / n:.1f}%); "
             f"rescued by best matching: {cov['rescued_by_best_matching']}; "
             f"never trained on: {cov['uncovered']}"]
    return "\n".join(lines)


def draw_examples(dataset, out_dir, num_images=6):
    """Draws the first images with their ground-truth boxes and masks; returns the paths."""
    from retinamask_tf.visualize import draw_detections, overlay_masks

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for r in dataset.records[:num_images]:
        image = read_rgb(r.path, r.orientation)  # the annotations' frame
        masks, mask_classes = [], []
        for seg, cls, crowd in zip(r.segmentations, r.classes, r.is_crowd):
            if seg is not None and not crowd:
                masks.append(instance_masks.segmentation_to_mask(unpack(seg), r.height, r.width))
                mask_classes.append(dataset.class_ids[cls])
        if masks and image.shape[:2] == (r.height, r.width):
            image = overlay_masks(image, masks, mask_classes)
        ids = [dataset.class_ids[c] for c in r.classes]
        drawn = draw_detections(image, r.boxes, ids, None,
                                [dataset.class_names[c] for c in r.classes])
        path = os.path.join(out_dir, f"image_{r.image_id}.png")
        drawn.save(path)
        paths.append(path)
    return paths


def plot_stats(stats, path):
    """Class counts, box sizes, aspects and best-anchor IoUs in one PNG; False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    names = [c["name"] for c in stats["per_class"]]
    axes[0].bar(range(len(names)), [c["count"] for c in stats["per_class"]])
    axes[0].set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    axes[0].set_title("instances per class")
    for ax, key, title in ((axes[1], "size_hist", "box size sqrt(area), px (model input)"),
                           (axes[2], "aspect_hist", "log2(height / width)"),
                           (axes[3], "max_iou_hist", "best anchor IoU per box")):
        h = stats[key]
        ax.bar(range(len(h["counts"])), h["counts"])
        ax.set_xticks(range(len(h["counts"])), h["labels"], rotation=45, fontsize=7)
        ax.set_title(title)
    axes[3].axvline(stats["coverage"]["positive_threshold"] * 10 - 0.5, color="r", ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def write_report(dataset, config, out_dir, max_images=None, num_drawn=6):
    """stats.json, stats.png (with matplotlib), drawn examples; returns (stats, paths)."""
    os.makedirs(out_dir, exist_ok=True)
    stats = inspect_dataset(dataset, config, max_images)
    paths = {"stats": os.path.join(out_dir, "stats.json")}
    with open(paths["stats"], "w") as f:
        json.dump(stats, f, indent=1)
    if plot_stats(stats, os.path.join(out_dir, "stats.png")):
        paths["plots"] = os.path.join(out_dir, "stats.png")
    paths["drawn"] = draw_examples(dataset, os.path.join(out_dir, "examples"), num_drawn)
    return stats, paths
