"""SavedModel against its OpenVINO IR (float32 and bfloat16) on this CPU: latency and COCO AP.

  pip install -e '.[openvino]'
  python bench/bench_openvino.py --model_dir=runs/demo [--threads 1,2] [--rounds 3]

Exports the run's latest checkpoint (detection-only SavedModel in
MODEL_DIR/export/saved_model/, the IR in MODEL_DIR/export/openvino/, unless already there).
Latency: the whole predictor call (``rm.load``) on one image (coco128's first from
``--datasets``, else the first val image): the SavedModel's in-graph resize, network and
NMS, the IR's the same; each engine and thread count in its own process, median of
``--repeats`` calls after warm-up, the engines interleaved over ``--rounds`` rounds (this
machine's speed drifts over minutes). AP: COCO bbox AP on the run's val split, once per
engine. Writes ``<out>/openvino_bench.json`` and ``openvino_bench.md``; names the CPU.
"""

import argparse
import glob
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, run_worker, timed, write_results  # noqa: E402

ENGINES = ("savedmodel", "openvino_float32", "openvino_bfloat16")


def _predictor(model_dir, engine, threads):
    import retinamask_tf as rm
    if engine == "savedmodel":
        if threads:  # (once per process: TF refuses a change after its first op)
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        return rm.load(os.path.join(model_dir, "export", "saved_model"))
    from retinamask_tf.export.openvino_runner import OpenVINOPredictor
    return OpenVINOPredictor(os.path.join(model_dir, "export", "openvino", "model.xml"),
                             num_threads=threads, precision=engine.split("_")[1])


def worker(args):
    from retinamask_tf.image_io import read_rgb
    predictor = _predictor(args.model_dir, args.engine, args.threads)
    image = read_rgb(args.image)
    row = timed(lambda: predictor(image), args.repeats)
    row.pop("times_s")
    print(json.dumps(row))


def prepare(args):
    """Exports what is missing; AP of each engine; prints {engine: {ap, ap50}}."""
    import retinamask_tf as rm
    from retinamask_tf.export.openvino_ir import export_openvino
    from retinamask_tf.export.saved_model import export_servable
    root = os.path.join(args.model_dir, "export")
    if not os.path.isdir(os.path.join(root, "saved_model")):
        export_servable(args.model_dir, os.path.join(root, "saved_model"))
    if not os.path.exists(os.path.join(root, "openvino", "model.xml")):
        export_openvino(args.model_dir, os.path.join(root, "openvino"))
    val = rm.load_data(rm.restore(args.model_dir).config)[1]
    out = {"image": val.records[0].path}
    for engine in ENGINES:
        m = rm.evaluate_predictor(_predictor(args.model_dir, engine, None), val, progress=False)
        out[engine] = {"ap": m["bbox"]["AP"], "ap50": m["bbox"]["AP50"]}
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding coco128/ (its first image is timed)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        return worker(args)
    if args.prepare:
        return prepare(args)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OPENVINO_TELEMETRY_DISABLE="1")
    info = run_worker([sys.executable, __file__, "--prepare", "--model_dir", args.model_dir],
                      env, "export and AP", "openvino")
    image = info.pop("image")
    if args.datasets and glob.glob(os.path.join(args.datasets, "coco128", "images", "*.jpg")):
        image = sorted(glob.glob(os.path.join(args.datasets, "coco128", "images", "*.jpg")))[0]
    threads = [int(t) for t in args.threads.split(",")]
    measured = []
    for r in range(args.rounds):
        for t in threads:
            for engine in ENGINES:
                row = run_worker([sys.executable, __file__, "--worker", "--model_dir",
                                  args.model_dir, "--engine", engine, "--threads", str(t),
                                  "--image", image, "--repeats", str(args.repeats)], env,
                                 f"round {r + 1}, {t} thread(s): {engine}", "openvino")
                measured.append(dict(row, engine=engine, threads=t, round=r + 1))
    table = []
    for t in threads:
        base = statistics.median(m["median_s"] for m in measured
                                 if m["engine"] == "savedmodel" and m["threads"] == t)
        for engine in ENGINES:
            runs = [m["median_s"] for m in measured if m["engine"] == engine and m["threads"] == t]
            table.append({"engine": engine, "threads": t,
                          "median_ms": 1000 * statistics.median(runs),
                          "rounds_ms": [1000 * x for x in runs],
                          "ratio": statistics.median(runs) / base, **info[engine]})
    result = {"machine": {"cpu": cpu_name(), "cpus": os.cpu_count()}, "image": image,
              "model_dir": args.model_dir, "rows": table, "measured": measured}
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; {args.rounds} interleaved rounds x "
             f"{args.repeats} calls; the whole predictor call on {os.path.basename(image)}.", "",
             "| engine | threads | median ms (rounds) | / SavedModel | bbox AP | AP50 |",
             "|---|---|---|---|---|---|"]
    for row in table:
        rounds = ", ".join(f"{x:.1f}" for x in row["rounds_ms"])
        lines.append(f"| {row['engine']} | {row['threads']} | {row['median_ms']:.1f} ({rounds}) | "
                     f"{row['ratio']:.2f} | {row['ap']:.4f} | {row['ap50']:.4f} |")
    write_results(args.out, "openvino_bench", result, lines)


if __name__ == "__main__":
    main()
