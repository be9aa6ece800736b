"""Runs a model over a split and scores it with pycocotools' COCOeval.

Results are written with the dataset's own category ids and COCO ``[x, y, w, h]``
boxes in original-image pixels, masks as RLE pasted at the original image size
(bbox and segm are scored separately); metrics, per-class tables and the raw
results go to JSON files.
"""

import contextlib
import copy
import dataclasses
import io
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from retinamask_tf.coco_results import ResultsFile, split_by_iou_type, to_coco_results
from retinamask_tf.data import pipeline
from retinamask_tf.data.errors import DatasetError
from retinamask_tf.data.segmentations import pack_all
from retinamask_tf.data.runtime_skips import RuntimeSkips
from retinamask_tf.mask_paste import paste_masks
from retinamask_tf.progress import Progress

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCOeval's object-size ranges (area in pixels) of the stats that have one.
AREA_RANGES = {"s": (0, 32 ** 2), "m": (32 ** 2, 96 ** 2), "l": (96 ** 2, float("inf"))}


def fmt(value, digits=3):
    """A metric for a table: ``-`` where it is absent (None: no ground truth to score)."""
    return "-" if value is None else f"{value:.{digits}f}"


def _metric(value):
    """COCOeval's -1 means "nothing to score" (no ground truth in that range), not 0."""
    return None if value is None or value < 0 else float(value)


def batch_to_coco(det, image_ids, class_ids, image_sizes=None, threshold=0.5):
    """COCO results (``coco_results.to_coco_results``) of a batch of ``model.detect``
    outputs.

    Args:
      det: numpy dict boxes [B, D, 4] yxyx original pixels, scores [B, D], classes [B, D]
        contiguous, num_detections [B]; optionally masks [B, num_masks, m, m] probabilities
        in the frame of each box (pasted at ``image_sizes`` [B] (height, width) and
        thresholded at ``threshold``).
      image_ids: [B] ints; class_ids: contiguous index -> category id.
    """
    results = []
    for b, image_id in enumerate(image_ids):
        n = int(det["num_detections"][b])
        boxes = det["boxes"][b, :n]
        binary = None
        if "masks" in det and image_sizes is not None:
            k = min(n, det["masks"].shape[1])
            height, width = (int(v) for v in image_sizes[b])
            binary = (paste_masks(det["masks"][b, :k], boxes[:k], height, width,
                                  threshold) if k else None)
        ids = np.asarray(class_ids)[det["classes"][b, :n].astype(np.int64)]
        results.extend(to_coco_results(image_id, boxes, det["scores"][b, :n], ids, binary))
    return results


def _ground_truth(gt_json, iou_type):
    """pycocotools' COCO of ``gt_json`` as the reader used it: boxes with a null or
    non-finite coordinate were skipped (and counted) there, so they are not scored here;
    for segm, an annotation whose segmentation the reader could not use (its mask was
    skipped) becomes an ignored region of its box (``iscrowd``), so that a broken polygon or
    RLE can neither crash the rasteriser nor count as a miss; keys COCOeval reads that COCO
    files may leave out get their usual values."""
    from pycocotools.coco import COCO

    with open(gt_json, "rb") as f:
        dataset = json.loads(f.read().decode("utf-8-sig"))
    sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
    if iou_type == "segm":  # checked in bulk: val2017 has 36k annotations
        anns = dataset["annotations"]
        problems = pack_all([a.get("segmentation") for a in anns],
                            [sizes[a["image_id"]][0] for a in anns],
                            [sizes[a["image_id"]][1] for a in anns])[1]
    kept = []
    for k, ann in enumerate(dataset["annotations"]):
        try:
            box = np.array([np.nan if v is None else v for v in ann["bbox"]], np.float64)
        except OverflowError:  # an integer beyond float range
            continue
        if not np.all(np.isfinite(box)):
            continue
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(box[2]) * float(box[3]))  # (inf past float range)
        segmentation = ann.get("segmentation")
        if iou_type == "segm" and problems[k]:
            x, y, w, h = box.tolist()
            ann.update(segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]], iscrowd=1)
        elif iou_type == "segm" and isinstance(segmentation, list):
            # Polygons of under 3 points are left out, as the reader's rasteriser does
            # (pycocotools would read a first one of 4 numbers as a box).
            ann["segmentation"] = [p for p in segmentation if len(p) >= 6]
        kept.append(ann)
    dataset["annotations"] = kept
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
    return gt


def coco_metrics(gt_json, results, image_ids, iou_type="bbox"):
    """COCOeval on ``results`` (a list of result dicts, or the path of a JSON file of them)
    restricted to ``image_ids``.

    Returns:
      (metrics dict of STAT_NAMES -> float, or None where there is no ground truth to
      score (COCOeval's -1, e.g. APs without small objects), per-class list of
      {"category_id", "name", "AP", "AP50", "num_gt"}, summary text).
    """
    from pycocotools.cocoeval import COCOeval

    gt = _ground_truth(gt_json, iou_type)
    cat_ids = sorted(gt.getCatIds())
    if not results:
        # Zero where there is ground truth to miss; absent where there is none.
        anns = gt.loadAnns(gt.getAnnIds(imgIds=image_ids, iscrowd=False))
        area = np.array([a.get("area", 0.0) for a in anns], np.float64)
        zero = {}
        for k in STAT_NAMES:  # APs, ARm, ...: the size range the name ends with
            low, high = AREA_RANGES.get(k[-1], (0, float("inf")))
            zero[k] = 0.0 if ((area >= low) & (area <= high)).any() else None
        per_class = []
        for c in cat_ids:
            n = len(gt.getAnnIds(imgIds=image_ids, catIds=[c], iscrowd=False))
            per_class.append({"category_id": c, "name": gt.cats[c]["name"],
                              "AP": 0.0 if n else None, "AP50": 0.0 if n else None, "num_gt": n})
        return zero, per_class, "no detections"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # A results file (``ResultsFile``) is read by loadRes itself; a list is copied, as
        # loadRes adds keys to the dicts it gets.
        dt = gt.loadRes(results if isinstance(results, str) else copy.deepcopy(results))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {k: _metric(v) for k, v in zip(STAT_NAMES, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = []
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class.append({
            "category_id": int(cid), "name": gt.cats[cid]["name"],
            "AP": float(np.mean(p[p > -1])) if (p > -1).any() else None,
            "AP50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None,
            "num_gt": len(gt.getAnnIds(imgIds=image_ids, catIds=[cid], iscrowd=False))})
    return metrics, per_class, buf.getvalue()


def format_table(per_class, key_order=("AP", "AP50")):
    """A markdown table of per-class results (``-``: no ground truth of that class)."""
    lines = ["| class | id | #gt | " + " | ".join(key_order) + " |",
             "|---|---|---|" + "---|" * len(key_order)]
    for row in per_class:
        lines.append(f"| {row['name']} | {row['category_id']} | {row['num_gt']} | "
                     + " | ".join(fmt(row[k]) for k in key_order) + " |")
    return "\n".join(lines)


def evaluate(model, dataset, config, out_dir=None, step=None, max_images=None, progress=True):
    """Runs ``model.detect`` over ``dataset`` (a CocoDataset) and scores bbox AP, and
    mask AP when the model has a mask head.

    Detections are written as they come (``coco_results.ResultsFile``) and COCOeval reads
    them from that file, so memory does not grow with the split (val2017 with masks: 500k
    detections, 250k RLEs). Without ``out_dir`` they go to a temporary folder.

    Returns:
      dict: ``bbox`` metrics, ``per_class`` table, (``segm``, ``per_class_segm``),
      ``num_images`` (scored), ``partial`` (``max_images`` cut the split short),
      ``skipped_images`` (at start-up) and ``dropped_images`` ({image id: [file, reason]},
      failed to decode here), both left out of AP, ``step``; also written to
      ``out_dir/metrics[_step].json`` with the detections (and segmentations) beside it;
      a partial evaluation writes ``metrics[_step]_first<N>.json`` instead, so it never
      replaces a full one.
    """
    records = dataset.records[:max_images] if max_images else dataset.records
    partial = len(records) < len(dataset.records)
    suffix = (f"_{step}" if step is not None else "") + (
        f"_first{len(records)}" if partial else "")
    with contextlib.ExitStack() as stack:
        folder = out_dir or stack.enter_context(tempfile.TemporaryDirectory())
        os.makedirs(folder, exist_ok=True)
        subset = dataclasses.replace(dataset, records=list(records))
        report, summary = _detect_and_score(model, subset, config, folder, suffix, progress)
    report.update(step=step, partial=partial,
                  skipped_images=int(sum(getattr(dataset, "skipped_images", {}).values())))
    if out_dir:
        path = os.path.join(out_dir, f"metrics{suffix}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        report["metrics_path"] = path
    report["summary"] = summary
    return report


def _detect_and_score(model, dataset, config, folder, suffix, progress):
    """(report without step/partial/skipped_images, COCOeval's summary text) of one
    evaluation; the detections are streamed to ``folder/detections<suffix>.json`` (and
    ``segmentations<suffix>.json``)."""
    skips = RuntimeSkips(dataset.json_path)
    ds = pipeline.dataset_for(config, dataset, training=False, skips=skips)
    with_masks = model.has_masks
    jit = bool(config.eval.jit_compile)  # the same detections, in ops XLA compiles
    detect = tf.function(lambda images, info: model.detect(images, info, xla_compatible=jit),
                         jit_compile=jit)
    threshold = config.model.mask_head.mask_threshold
    files = {"bbox": ResultsFile(os.path.join(folder, f"detections{suffix}.json"))}
    if with_masks:
        files["segm"] = ResultsFile(os.path.join(folder, f"segmentations{suffix}.json"))
    bar = Progress(len(dataset.records), unit="image") if progress else None
    seen = []
    for features, _ in ds:
        det = {k: v.numpy() for k, v in detect(features["images"], features["image_info"]).items()}
        image_ids = features["image_id"].numpy()
        seen.extend(int(i) for i in image_ids)
        sizes = features["image_info"].numpy()[:, :2]
        bbox, segm = split_by_iou_type(batch_to_coco(det, image_ids, dataset.class_ids,
                                                     sizes if with_masks else None, threshold))
        files["bbox"].add(bbox)
        if with_masks:
            files["segm"].add(segm)
        if bar:
            bar.update(len(seen))
    for f in files.values():
        f.close()
    if not seen:
        raise DatasetError(f"{dataset.json_path}: none of the {len(dataset.records)} val images "
                           f"could be decoded: {skips.summary()}")
    # Images the start-up check skipped (unreadable, wrong size) or that failed to decode
    # here are not in AP: their ground truth is left out with them (``coco_metrics``
    # scores the ``seen`` images only).
    report = {"num_images": len(seen), "num_detections": files["bbox"].count,
              "dropped_images": {i: list(v) for i, v in skips.images.items()}}
    summaries = []
    for iou_type, f in files.items():
        metrics, per_class, text = coco_metrics(dataset.json_path,
                                                f.path if f.count else [], seen, iou_type)
        report.update({iou_type: metrics,
                       "per_class" if iou_type == "bbox" else "per_class_segm": per_class})
        summaries.append(text)
    return report, "\n".join(summaries)
