"""Positive mask RoIs per image over a training run on real data: how many slots the mask
head needs, what a static cap would drop, and how many RoIs each scheme computes.

  python bench/mask_rois.py --config configs/fruits_nuts.yaml --datasets ../data \\
      --steps 1200 --every 100
  python bench/mask_rois.py --config configs/demo.yaml --steps 1400 --every 200

Trains the config (``--override key=value`` as main.py takes them) in a temporary run
directory and, at step 0 and every ``--every`` steps, probes ``--probe_batches`` training
batches: the detector's own top ``train_detections`` detections of the current weights
(the forward pass in training mode, as the step computes them; BatchNorm statistics are put
back afterwards) plus the GT boxes, matched as the mask branch matches them. Per probe:
positives per image (mean, median, 90th percentile, max), RoIs the head computes per image
with every "detections + GT" slot, with our trimmed slots (the batch's largest positive
count) and in the released code (its positives), and the share of positives a static cap
of K slots per image (``model.mask_head.max_train_rois``) would drop. Writes
``<out>/mask_rois_<config>.json`` and ``.md``.
"""

import argparse
import os
import platform
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import write_results  # noqa: E402

CAPS = (8, 16, 24, 32, 48, 64, 128)


def _data_overrides(config_path, datasets):
    """The data paths of the shipped fruits_nuts config pointed at ``datasets``."""
    name = os.path.splitext(os.path.basename(config_path))[0]
    if not datasets or name not in ("fruits_nuts",):
        return []
    root = os.path.join(datasets, name)
    return [f"data.train_json={root}/train.json", f"data.train_images={root}/images",
            f"data.val_json={root}/val.json", f"data.val_images={root}/images"]


def probe(model, dataset, batches, cap=None):
    """Positive RoI count of every image in ``batches`` batches, and the slot count of
    each batch's rows: ([per-image positives], [per-batch (images, all slots, trimmed)]);
    trimmed: the batch's largest positive count, at most ``cap``."""
    import numpy as np
    import tensorflow as tf

    from retinamask_tf.ops import proposals

    branch = model.mask_branch

    @tf.function
    def count(features, labels):
        pyramid = model.features(features["images"], training=True)
        outputs = model.head(pyramid, training=True)
        det = model.mask_training_detections(outputs, features["image_info"])
        if det is None:
            batch = tf.shape(labels["gt_boxes"])[0]
            det = {"boxes": tf.zeros([batch, 0, 4]), "num_detections": tf.zeros([batch], tf.int32)}
        gt_valid = labels["gt_valid"] & ~labels["gt_crowd"]
        rois, positive, _ = proposals.training_rois(
            det["boxes"], det["num_detections"], labels["gt_boxes"], gt_valid,
            labels["gt_mask_valid"], branch.proposal_iou)
        return tf.reduce_sum(tf.cast(positive, tf.int32), 1), tf.shape(rois)[1]

    saved = [v.numpy() for v in model.non_trainable_variables]
    per_image, per_batch = [], []
    for features, labels in dataset.take(batches):
        counts, slots = count(features, labels)
        counts = counts.numpy().tolist()
        per_image += counts
        per_batch.append((len(counts), int(slots), min(cap or slots, max(1, max(counts)))))
    for v, s in zip(model.non_trainable_variables, saved):
        v.assign(s)
    return np.asarray(per_image), per_batch


def summarize(step, per_image, per_batch):
    import numpy as np

    images = sum(b[0] for b in per_batch)
    total = max(int(per_image.sum()), 1)
    return {"step": step, "images": images, "mean": float(per_image.mean()),
            "p50": float(np.percentile(per_image, 50)), "p90": float(np.percentile(per_image, 90)),
            "max": int(per_image.max()),
            "computed_all_slots": sum(b[0] * b[1] for b in per_batch) / images,
            "computed_trimmed": sum(b[0] * b[2] for b in per_batch) / images,
            "computed_released": float(per_image.mean()),
            "dropped_share": {k: float(np.maximum(per_image - k, 0).sum() / total) for k in CAPS}}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding fruits_nuts/ (default: $RETINAMASK_TEST_DATA)")
    p.add_argument("--steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--probe_batches", type=int, default=8)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    from retinamask_tf import config as C
    from retinamask_tf.data import pipeline
    from retinamask_tf.training.trainer import Trainer

    overrides = _data_overrides(args.config, args.datasets) + args.override
    cfg = C.load_config([args.config], overrides)
    steps = args.steps or cfg.train.steps
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="mask_rois_"))
    dataset = pipeline.dataset_for(trainer.config, trainer.train_data, training=True)
    rows, every_image = [], []
    for step in sorted(set(list(range(0, steps, args.every)) + [steps])):
        if step:
            trainer.train(steps=step, progress=False)
        per_image, per_batch = probe(trainer.model, dataset, args.probe_batches,
                                     cfg.model.mask_head.max_train_rois)
        every_image.append(per_image)
        rows.append(summarize(step, per_image, per_batch))
        r = rows[-1]
        print(f"step {step}: positives per image mean {r['mean']:.1f}, p90 {r['p90']:.0f}, "
              f"max {r['max']}; computed per image: all {r['computed_all_slots']:.0f}, "
              f"trimmed {r['computed_trimmed']:.1f}, released {r['computed_released']:.1f}",
              flush=True)
    name = os.path.splitext(os.path.basename(args.config))[0]
    pooled = np.concatenate(every_image)
    total = max(int(pooled.sum()), 1)
    pooled_drop = {k: float(np.maximum(pooled - k, 0).sum() / total) for k in CAPS}
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
               "tensorflow": tf.__version__}
    result = {"machine": machine, "config": args.config, "overrides": overrides,
              "batch_size": cfg.train.batch_size,
              "train_detections": cfg.model.mask_head.train_detections,
              "max_train_rois": cfg.model.mask_head.max_train_rois, "rows": rows,
              "pooled_dropped_share": pooled_drop}
    lines = [f"{args.config}, batch {cfg.train.batch_size}, {args.probe_batches} batches per "
             f"probe; machine: {machine['cpus']} CPUs, TF {machine['tensorflow']}", "",
             "| step | positives/image mean | p50 | p90 | max | RoIs computed/image: all slots "
             "| trimmed (ours) | released (positives) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['mean']:.1f} | {r['p50']:.0f} | {r['p90']:.0f} | "
                     f"{r['max']} | {r['computed_all_slots']:.0f} | {r['computed_trimmed']:.1f} | "
                     f"{r['computed_released']:.1f} |")
    lines += ["", "Share of positives a static cap of K slots per image would drop (all probes "
              "pooled): " + ", ".join(f"K={k}: {v:.1%}" for k, v in pooled_drop.items())]
    write_results(args.out, f"mask_rois_{name}", result, lines)


if __name__ == "__main__":
    main()
