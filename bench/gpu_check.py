"""The GPU figures in one prepared run of at most ``--budget_s`` seconds (default 450), on
the first GPU TF sees. In order of importance, each measurement in its own process:

  1. ResNet-50-FPN training step at 800x1333 (padded to 800x1344), batch 2, 10 GT boxes per
     image: RetinaNet and RetinaMask, float32 and mixed_float16 (``bench_model.py``);
  2. SavedModel ``serving_default`` latency at 800x1333, batch 1, float32 and bfloat16
     exports of a random-weight ResNet-50-FPN (``compare_torchvision.py``'s workers);
  3. ``model.detect`` latency at 800x1333, batch 1, float32 and mixed_float16;
  4. MirroredStrategy on that GPU: 30 steps of the Trainer on coco128 (ResNet-50-FPN at
     512x512 from scratch, batch 4, mask head on): steps/s after the first 10, finite
     losses;
  5. XLA: the RetinaMask mixed_float16 step and the float32 detection compiled.

Each row also has the process's peak GPU memory (``tf.config.experimental.get_memory_info``).
What the budget does not reach is listed as skipped. Writes ``<out>/gpu_check.json``/``.md``.

  python bench/gpu_check.py [--budget_s 450] [--datasets ../data]
  python bench/gpu_check.py --allow_cpu --small     # the plumbing on a CPU: demo model, 256 px
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, gpu_peak_mb, write_results  # noqa: E402

BENCH_MODEL = os.path.join(REPO, "bench", "bench_model.py")
COMPARE = os.path.join(REPO, "bench", "compare_torchvision.py")


def mirrored_worker(args):
    """Trainer + MirroredStrategy over the GPUs TF sees (CPU with --allow_cpu)."""
    import numpy as np
    import tensorflow as tf

    from retinamask_tf import config as C
    from retinamask_tf.training import distribute
    from retinamask_tf.training.trainer import Trainer

    coco = os.path.join(args.datasets, "coco128")
    data = ["data.kind=coco", f"data.train_json={coco}/annotations.json",
            f"data.train_images={coco}/images", f"data.val_json={coco}/annotations.json",
            f"data.val_images={coco}/images"]
    if args.small:
        model = ["model.backbone.depth=18", "model.backbone.width=16", "model.fpn.channels=32",
                 "model.head.channels=32", "model.head.num_convs=1", "model.mask_head.channels=16",
                 "model.mask_head.num_convs=1", "data.short_side=256", "data.long_side=256"]
    else:
        model = ["model.backbone.depth=50", "model.backbone.norm=frozen",
                 "model.backbone.weights=null", "data.short_side=512", "data.long_side=512"]
    steps, warm = args.steps, min(10, args.steps // 3)
    cfg = C.load_config([], data + model + [
        f"train.batch_size={args.train_batch}", f"train.steps={steps}", "train.warmup_steps=10",
        "train.lr_drop_steps=[]", "train.base_lr=0.005", f"train.checkpoint_every={steps}",
        "train.summary_every=1000"])
    strategy = distribute.build_strategy("mirrored")
    model_dir = tempfile.mkdtemp(prefix="gpu_check_mirrored_")
    trainer = Trainer(cfg, model_dir, strategy=strategy)
    t0 = time.perf_counter()
    trainer.train(steps=warm, progress=False)
    t1 = time.perf_counter()
    result = trainer.train(progress=False)
    t2 = time.perf_counter()
    losses = {k: float(v) for k, v in result.items() if k.endswith("loss")}
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "devices": [d.name for d in tf.config.list_logical_devices()],
                      "first_steps_s": t1 - t0, "steps_per_s": (steps - warm) / (t2 - t1),
                      "median_s": (t2 - t1) / (steps - warm), "losses": losses,
                      "finite": bool(np.all(np.isfinite(list(losses.values())))),
                      "gpu_peak_mb": gpu_peak_mb()}))


def _run(cmd, timeout, env):
    """The JSON row a worker printed last, or {"skipped": why}."""
    if timeout < 20:
        return {"skipped": "budget spent"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"stopped at the budget ({timeout:.0f} s left)"}
    if out.returncode != 0:
        return {"failed": out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else
                f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget_s", type=float, default=450)
    p.add_argument("--allow_cpu", action="store_true", help="run without a GPU (plumbing check)")
    p.add_argument("--small", action="store_true",
                   help="demo-sized model at 256x256 instead of ResNet-50-FPN at 800x1333")
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding coco128/ (default: $RETINAMASK_TEST_DATA)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "gpu"))
    p.add_argument("--worker", choices=["mirrored"], help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--train_batch", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "mirrored":
        return mirrored_worker(args)
    if not args.datasets:
        p.error("--datasets (or $RETINAMASK_TEST_DATA): the folder holding coco128/")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        raise SystemExit("no GPU visible to TensorFlow (nvidia-smi, CUDA libraries); "
                         "--allow_cpu runs the same steps on the CPU")
    gpu_name = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
                if gpus else None)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO)
    size = "256x256" if args.small else "800x1333"
    model = (["--config", os.path.join(REPO, "configs", "demo.yaml"),
              "--override", "model.num_classes=5"] if args.small else [])
    common = model + ["--override", "data.pad_stride=32", "--size", size, "--gt_per_image", "10",
                      "--threads", str(os.cpu_count() or 1)]
    fp16 = ["--override", "train.precision=mixed_float16"]
    work = tempfile.mkdtemp(prefix="gpu_check_")
    coco = os.path.join(args.datasets, "coco128")
    def bench_model(mode, repeats, *extra):
        return [sys.executable, BENCH_MODEL, "--worker", "--mode", mode, "--repeats",
                str(repeats)] + common + list(extra)

    jobs = []
    for precision in ("float32", "mixed_float16"):
        for mode in ("train_retinanet", "train"):
            jobs.append((f"{mode} {precision}", bench_model(
                mode, 10, "--train_batch", "2", *(fp16 if precision != "float32" else []))))
    if not args.small:
        jobs.append(("export random ResNet-50-FPN", [
            sys.executable, COMPARE, "--worker", "prepare", "--size", size, "--tflite_variants",
            "", "--coco_json", f"{coco}/annotations.json", "--coco_images", f"{coco}/images",
            "--pad_stride", "32", "--work", work, "--threads", "1"]))
        for mode in ("savedmodel", "savedmodel_bfloat16"):
            jobs.append((f"SavedModel {mode}", [sys.executable, COMPARE, "--worker", "ours",
                                                "--mode", mode, "--size", size, "--repeats",
                                                "20", "--work", work, "--threads",
                                                str(os.cpu_count() or 1)]))
    for precision in ("float32", "mixed_float16"):
        jobs.append((f"infer {precision}", bench_model(
            "infer", 20, *(fp16 if precision != "float32" else []))))
    jobs.append(("MirroredStrategy, Trainer on coco128", [
        sys.executable, __file__, "--worker", "mirrored", "--datasets", args.datasets]
        + (["--small", "--steps", "9", "--train_batch", "2"] if args.small else [])))
    jobs.append(("train mixed_float16 XLA", bench_model("train", 10, "--train_batch", "2",
                                                         "--jit_compile", *fp16)))
    jobs.append(("infer float32 XLA", bench_model("infer", 20, "--jit_compile")))
    rows = []
    for what, cmd in jobs:
        left = args.budget_s - (time.perf_counter() - start)
        print(f"[gpu_check] {what} ({left:.0f} s left) ...", flush=True)
        t = time.perf_counter()
        row = _run(cmd, left, env)
        row.update(what=what, wall_s=time.perf_counter() - t)
        print(f"[gpu_check]   {json.dumps({k: v for k, v in row.items() if k != 'times_s'})[:400]}",
              flush=True)
        rows.append(row)
    machine = {"gpu": gpu_name, "cpu": cpu_name(), "cpus": os.cpu_count(),
               "platform": platform.platform(), "tensorflow": tf.__version__}
    lines = [f"GPU: {gpu_name or 'none (--allow_cpu)'}; {machine['cpu']}, {machine['cpus']} CPUs; "
             f"TF {tf.__version__}; {size}, budget {args.budget_s:.0f} s, "
             f"{time.perf_counter() - start:.0f} s used", "",
             "| measurement | median s | GPU peak MB | process wall s | note |", "|---|---|---|---|---|"]
    for r in rows:
        note = r.get("skipped") or r.get("failed") or ""
        if "steps_per_s" in r:
            note = (f"{r['replicas']} replica(s), {r['steps_per_s']:.2f} steps/s, losses "
                    f"{'finite' if r['finite'] else 'NOT finite'}")
        median = f"{r['median_s']:.4f}" if "median_s" in r else "-"
        peak = r.get("gpu_peak_mb")
        lines.append(f"| {r['what']} | {median} | {f'{peak:.0f}' if peak else '-'} | "
                     f"{r['wall_s']:.0f} | {note} |")
    write_results(args.out, "gpu_check", {"machine": machine, "rows": rows}, lines)


if __name__ == "__main__":
    main()
