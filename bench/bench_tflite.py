"""Keras vs SavedModel vs TFLite variants of one trained run: latency, file size, COCO AP.

  python bench/bench_tflite.py --model_dir=runs/demo [--variants=float32,float16,dynamic_int8,int8]
                                [--saved_model_precisions=float32,bfloat16]

Exports the run's latest checkpoint (detection-only SavedModel in
MODEL_DIR/export/saved_model/<step>/, the bfloat16 one in saved_model_bfloat16/<step>/,
and each TFLite variant, unless already there), then on the run's val split:
  latency  batch 1, ``--threads`` threads (TF intra/inter-op; LiteRT XNNPACK), median of
           ``--repeats`` runs after warm-up on one val image: Keras = ``model.detect`` in a
           tf.function on the preprocessed image; SavedModel = ``serving_default`` on the
           uint8 image (resize + network + post-processing); TFLite = the interpreter on the
           letterboxed image (network + post-processing; the NumPy letterbox is timed apart);
  size     of the SavedModel's variables and of each .tflite file;
  AP       COCO bbox AP / AP50 / AP75 of each on all val images.
Writes ``<out>/tflite_bench.json`` and ``tflite_bench.md``.
"""

import argparse
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import write_results  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--variants", default="float32,float16,dynamic_int8,int8")
    p.add_argument("--saved_model_precisions", default="float32,bfloat16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--num_calibration_images", type=int, default=100)
    p.add_argument("--max_images", type=int, default=None, help="val images for AP (default all)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()

    import tensorflow as tf

    from retinamask_tf.data import pipeline
    from retinamask_tf.evaluation.coco_evaluator import evaluate, fmt
    from retinamask_tf.evaluation.predictor_eval import evaluate_predictor
    from retinamask_tf.predict import SavedModelPredictor
    from retinamask_tf.export import saved_model, tflite
    from retinamask_tf.ops import resize
    from retinamask_tf.export.litert_runner import LiteRTPredictor
    from retinamask_tf.image_io import read_rgb

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    variants = args.variants.split(",")
    export_root = os.path.join(args.model_dir, "export")
    # TF Serving's layout, as main.py writes it: saved_model/<checkpoint step>/.
    step = str(saved_model.checkpoint_step(args.model_dir))
    sm_dirs = {}
    for precision in filter(None, args.saved_model_precisions.split(",")):
        sm_base = os.path.join(export_root, "saved_model" + (
            "" if precision == "float32" else f"_{precision}"))
        sm_dirs[precision] = os.path.join(sm_base, step)
        if not os.path.exists(os.path.join(sm_dirs[precision], "saved_model.pb")):
            saved_model.export_servable(args.model_dir, sm_base, precision=precision)
    tfl_dir = os.path.join(export_root, "tflite")
    if not all(os.path.exists(os.path.join(tfl_dir, f"model_{v}.tflite")) for v in variants):
        tflite.export_tflite(args.model_dir, tfl_dir, variants, args.num_calibration_images)

    run = saved_model.restore_for_export(args.model_dir)
    model, config = run.model, run.config
    _, val = pipeline.load_splits(config.data)
    records = val.records[:args.max_images] if args.max_images else val.records
    val = type(val)(**{**val.__dict__, "records": list(records)})
    image = read_rgb(records[0].path, records[0].orientation)
    rows = []

    # Keras
    padded, info = resize.resize_and_pad(tf.constant(image, tf.float32), config.data.short_side,
                                         config.data.long_side, model.image_size)
    detect = tf.function(model.detect)
    keras_s = _median_seconds(lambda: detect(padded[None], info[None], with_masks=False),
                              args.repeats)
    report = evaluate(model, val, config, progress=False)
    rows.append({"model": "Keras (tf.function)", "latency_ms": keras_s * 1000, "size_mb": None,
                 **{k: report["bbox"][k] for k in ("AP", "AP50", "AP75")}})

    # SavedModel
    for precision, sm_dir in sm_dirs.items():
        predictor = SavedModelPredictor(sm_dir)
        sm_s = _median_seconds(lambda: predictor.serving(images=tf.constant(image[None])),
                               args.repeats)
        metrics = evaluate_predictor(predictor, val, progress=False)["bbox"]
        name = "SavedModel serving_default" + ("" if precision == "float32" else f" {precision}")
        rows.append({"model": name, "latency_ms": sm_s * 1000, "size_mb": _dir_size(sm_dir) / 1e6,
                     **{k: metrics[k] for k in ("AP", "AP50", "AP75")}})
        print(rows[-1], flush=True)

    # TFLite
    lb_s = _median_seconds(lambda: resize.letterbox(image, config.data.short_side,
                                                       config.data.long_side, model.image_size),
                           args.repeats)
    for v in variants:
        path = os.path.join(tfl_dir, f"model_{v}.tflite")
        runner = LiteRTPredictor(path, num_threads=args.threads)
        lb, shape, _ = runner.preprocess(image)
        s = _median_seconds(lambda: runner.run_letterboxed(lb, shape), args.repeats)
        m = evaluate_predictor(runner, val, progress=False)["bbox"]
        rows.append({"model": f"TFLite {v}", "latency_ms": s * 1000,
                     "size_mb": os.path.getsize(path) / 1e6,
                     **{k: m[k] for k in ("AP", "AP50", "AP75")}})
        print(rows[-1], flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    result = {"model_dir": args.model_dir, "image_size": list(model.image_size),
              "val_images": len(records), "threads": args.threads, "repeats": args.repeats,
              "letterbox_ms": lb_s * 1000, "tensorflow": tf.__version__, "machine": machine,
              "rows": rows}
    lines = [f"{args.model_dir}: input {model.image_size[0]}x{model.image_size[1]}, batch 1, "
             f"{args.threads} threads, {len(records)} val images; {machine}; TF {tf.__version__}",
             "", "| model | latency ms (median) | size MB | AP | AP50 | AP75 |", "|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_mb']:.2f}" if r["size_mb"] is not None else "-"
        lines.append(f"| {r['model']} | {r['latency_ms']:.1f} | {size} | {fmt(r['AP'])} | "
                     f"{fmt(r['AP50'])} | {fmt(r['AP75'])} |")
    lines.append(f"\nNumPy letterbox (TFLite preprocessing): {lb_s * 1000:.1f} ms")
    write_results(args.out, "tflite_bench", result, lines)


if __name__ == "__main__":
    main()
