"""Training-step time, inference latency and peak memory of a RetinaMask model on this machine.

  python bench/bench_model.py                       # ResNet-50-FPN, 512x512 and 800x1333
  python bench/bench_model.py --config configs/demo.yaml --sizes 256x256
  python bench/bench_model.py --override data.pad_stride=32     # 800x1333 -> 800x1344

The input is padded to multiples of ``data.pad_stride`` (default 128: 896x1408).

Each (size, mode) runs in its own process so that its peak RSS is its own.
Modes:
  infer         batch 1, ``model.detect(with_masks=False)`` in a tf.function (network +
                full post-processing) of the model trained with the mask head;
  infer_retinanet  the same on a model built without a mask head (must equal ``infer``:
                the mask head costs nothing at detection time);
  infer_masks   ``model.detect`` with masks for the top ``num_masks`` detections;
  train         one ``train_step`` (forward, matching, losses, mask branch on
                "100 + GT" RoIs, backward, SGD) at ``--train_batch``, ``--gt_per_image``
                random boxes per image (with random weights no detection passes the score
                threshold, so the GT boxes are the mask branch's positive RoIs: set it to
                the positives a trained detector gives, see ``bench/mask_rois.py``);
  train_retinanet  the same without the mask branch (the overhead is the difference).
``--override train.precision=mixed_float16`` (or mixed_bfloat16) builds the model under
that policy, as training does. With ``--jit_compile`` the timed function is compiled with
XLA (``xla_compatible=True``: the XLA-compilable NMS and crops). Times are medians over
``--repeats`` runs after one warm-up (which includes the compilation). ``--profile``: one
more call under TF's profiler, with inter-op parallelism 1 so that the ops' times add up to
the call's; the time per op type (oneDNN's convolutions are ``_MklNative*Conv2D*``) goes
into the table. Writes ``<out>/model_bench.json`` and ``model_bench.md``.
"""

import argparse
import json
import os
import platform
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import gpu_peak_mb, run_worker, timed, write_results  # noqa: E402

R50 = ["model.backbone.depth=50", "model.backbone.norm=frozen", "model.backbone.weights=null",
       "model.num_classes=80"]


def _padded(h, w, stride=128):
    return -(-h // stride) * stride, -(-w // stride) * stride


def worker(args):
    import numpy as np
    import tensorflow as tf

    from retinamask_tf import config as C
    from retinamask_tf.modeling import factory
    from retinamask_tf.training.optimizer import build_optimizer

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if args.profile else args.threads)
    retinanet = args.mode.endswith("_retinanet")
    cfg = C.load_config(args.config, (R50 if not args.config else []) + args.override
                        + (["model.mask_head.enabled=false"] if retinanet else []))
    h, w = (int(v) for v in args.size.split("x"))
    ph, pw = _padded(h, w, cfg.data.pad_stride)
    num_classes = cfg.model.num_classes or 80
    model = factory.build_model(cfg, num_classes, image_size=(ph, pw),  # as the Trainer does
                                dtype_policy=cfg.train.precision)
    rng = np.random.default_rng(0)
    if args.mode.startswith("infer"):
        images = tf.constant(rng.uniform(0, 255, (1, ph, pw, 3)).astype(np.float32))
        info = tf.constant([[h, w, 1.0, 1.0]], tf.float32)
        with_masks = args.mode == "infer_masks"
        fn = tf.function(lambda a, b: model.detect(a, b, with_masks=with_masks,
                                                     xla_compatible=args.jit_compile),
                         jit_compile=args.jit_compile)
        call = lambda: fn(images, info)["num_detections"].numpy()  # noqa: E731
    else:
        model.compile(optimizer=build_optimizer(cfg.train))
        b = args.train_batch
        g = args.gt_per_image
        yx = rng.uniform(0, min(h, w) * 0.6, (b, g, 2))
        hw = rng.uniform(16, min(h, w) * 0.4, (b, g, 2))
        features = {"images": tf.constant(rng.uniform(0, 255, (b, ph, pw, 3)).astype(np.float32)),
                    "image_info": tf.constant([[h, w, 1.0, 1.0]] * b, tf.float32)}
        labels = {"gt_boxes": tf.constant(np.concatenate([yx, yx + hw], -1).astype(np.float32)),
                  "gt_classes": tf.constant(rng.integers(0, num_classes, (b, g)).astype(np.int32)),
                  "gt_valid": tf.ones((b, g), tf.bool), "gt_crowd": tf.zeros((b, g), tf.bool)}
        if model.has_masks:
            s = cfg.model.mask_head.gt_mask_size
            labels.update(gt_masks=tf.ones((b, g, s, s), tf.uint8),
                          gt_mask_valid=tf.ones((b, g), tf.bool))
        fn = tf.function(lambda data: model.train_step_with(data, args.jit_compile),
                         jit_compile=args.jit_compile)
        call = lambda: fn((features, labels))["total_loss"].numpy()  # noqa: E731
    row = timed(call, args.repeats)
    row["gpu_peak_mb"] = gpu_peak_mb()
    if args.profile:
        row["profile_s"] = _op_type_seconds(call)
    row.update(mode=args.mode + (" xla" if args.jit_compile else ""), size=args.size,
               gt_per_image=None if args.mode.startswith("infer") else args.gt_per_image,
               padded=f"{ph}x{pw}",
               batch=1 if args.mode.startswith("infer") else args.train_batch,
               params=model.count_params())
    print(json.dumps(row))


def _op_type_seconds(call):
    """{op type: seconds} of one ``call`` under TF's profiler (the host's op events, summed
    by type; largest first)."""
    import collections
    import glob
    import re
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="bench_profile_")
    tf.profiler.experimental.start(logdir)
    call()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "node:OpType"
                op_type = name.rsplit(":", 1)[-1]
                if (":" in name and "::" not in name  # not the executor's own events
                        and re.fullmatch(r"_?[A-Z][A-Za-z0-9_]*", op_type)):
                    totals[op_type] += event.duration_ps * 1e-12
    return dict(totals.most_common())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512x512,800x1333")
    p.add_argument("--modes", default="infer,infer_retinanet,infer_masks,train,train_retinanet")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train_batch", type=int, default=2)
    p.add_argument("--gt_per_image", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--jit_compile", action="store_true", help="compile with XLA")
    p.add_argument("--profile", action="store_true", help="time per op type (see above)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--size", size,
                   "--repeats", str(args.repeats), "--train_batch", str(args.train_batch),
                   "--gt_per_image", str(args.gt_per_image), "--threads", str(args.threads)]
            cmd += ["--jit_compile"] if args.jit_compile else []
            cmd += ["--profile"] if args.profile else []
            for c in args.config:
                cmd += ["--config", c]
            for o in args.override:
                cmd += ["--override", o]
            rows.append(run_worker(cmd, env, f"{mode} {size}"))
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version()}
    import tensorflow as tf  # for the version only, after the workers ran
    machine["tensorflow"] = tf.__version__
    result = {"machine": machine, "config": args.config or ["ResNet-50-FPN defaults"],
              "overrides": args.override, "rows": rows}
    lines = [f"Machine: {machine['cpus']} CPUs, {machine['platform']}, TF {machine['tensorflow']}",
             "", "| mode | input (padded) | batch | median s | min s | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mode = r["mode"] + (f", {r['gt_per_image']} GT/image" if r.get("gt_per_image") else "")
        lines.append(f"| {mode} | {r['size']} ({r['padded']}) | {r['batch']} | "
                     f"{r['median_s']:.3f} | {r['min_s']:.3f} | {r['peak_rss_mb']:.0f} |")
    for r in rows:
        if "profile_s" in r:
            lines += ["", f"Profile of one {r['mode']} call at {r['size']} (inter-op "
                      "parallelism 1): seconds per op type", "", "| op type | s |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in list(r["profile_s"].items())[:15]]
    write_results(args.out, "model_bench", result, lines)


if __name__ == "__main__":
    main()
