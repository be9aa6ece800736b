"""Where a served detector's CPU time goes: per op type, our SavedModels under TF's profiler
and an OpenVINO IR under OpenVINO's performance counters.

  python bench/profile_serving.py --saved_model DIR [--saved_model DIR2] [--openvino MODEL.xml]
                                  [--image IMG] [--size 512x512] [--threads 2]

Each SavedModel's ``serving_default`` and the IR (float32 and bfloat16 compute) run on one
uint8 image (``--image`` resized to ``--size``; by default coco128's first, else noise)
after ``--warmup`` calls; TF's profiler records one call with inter-op parallelism 1 (so the ops' times add up
to the call's) and the time is summed per op type (oneDNN's convolutions are
``_MklNative*Conv2D*``, casts ``Cast``); OpenVINO's counters (``PERF_COUNT``) give each
executed node's time, summed per node type and implementation (``exec_type``, e.g.
``brgconv_avx512_amx`` for a convolution on AMX tiles), over ``--repeats`` calls. Writes
``<out>/profile_serving.json`` and ``.md``; names the CPU.
"""

import argparse
import collections
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, write_results  # noqa: E402


def _image(args):
    """``--image`` resized to ``--size`` (default: coco128's first under
    $RETINAMASK_TEST_DATA, else seeded noise), as bench/reference_parity.py draws it."""
    from bench.reference_parity import input_image
    h, w = (int(v) for v in args.size.split("x"))
    return input_image(args.image, h, w, 0)


def profile_saved_model(path, image, warmup):
    """{op type: seconds} of one call, the call's wall time and its op total."""
    import tensorflow as tf

    from bench.bench_model import _op_type_seconds
    serving = tf.saved_model.load(path).signatures["serving_default"]
    batch = tf.constant(image[None])

    def call():
        serving(images=batch)["num_detections"].numpy()

    for _ in range(warmup):
        call()
    t = time.perf_counter()
    call()
    wall = time.perf_counter() - t
    ops = _op_type_seconds(call)
    return {"engine": f"SavedModel {os.path.basename(os.path.normpath(path))}",
            "wall_s": wall, "ops_s": sum(ops.values()), "by_type": ops}


def profile_openvino(path, image, threads, precision, warmup, repeats):
    """{node type / implementation: seconds per call} from OpenVINO's counters."""
    import openvino

    from retinamask_tf.export.openvino_runner import compile_settings
    compiled = openvino.Core().compile_model(
        path, "CPU", dict(compile_settings(threads, precision), PERF_COUNT=True))
    request = compiled.create_infer_request()
    batch = np.ascontiguousarray(image[None])
    for _ in range(warmup):
        request.infer(batch)
    totals, walls = collections.Counter(), []
    for _ in range(repeats):
        t = time.perf_counter()
        request.infer(batch)
        walls.append(time.perf_counter() - t)
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                totals[f"{info.node_type} ({info.exec_type})"] += (
                    info.real_time.total_seconds() / repeats)
    return {"engine": f"OpenVINO IR {precision}", "wall_s": statistics.median(walls),
            "ops_s": sum(totals.values()), "by_type": dict(totals.most_common())}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saved_model", action="append", default=[], help="a SavedModel folder")
    p.add_argument("--openvino", help="an IR model.xml (profiled in float32 and bfloat16)")
    p.add_argument("--image", help="an image (default: coco128's first under "
                                    "$RETINAMASK_TEST_DATA, else seeded noise)")
    p.add_argument("--size", default="512x512", help="HxW the image is resized to")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="OpenVINO calls counted")
    p.add_argument("--top", type=int, default=12, help="op types listed per engine")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()
    if not args.saved_model and not args.openvino:
        p.error("give --saved_model and/or --openvino")

    image = _image(args)
    results = []
    if args.saved_model:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        results += [profile_saved_model(path, image, args.warmup) for path in args.saved_model]
    if args.openvino:
        results += [profile_openvino(args.openvino, image, args.threads, precision, args.warmup,
                                     args.repeats) for precision in ("float32", "bfloat16")]

    lines = [f"CPU: {cpu_name()}; {args.threads} thread(s); input {args.size} uint8, batch 1.",
             ""]
    for r in results:
        lines += [f"**{r['engine']}**: call {r['wall_s'] * 1e3:.1f} ms, ops {r['ops_s'] * 1e3:.1f} "
                  "ms", "", "| op type | ms | share of ops |", "|---|---|---|"]
        for name, s in list(r["by_type"].items())[:args.top]:
            lines.append(f"| {name} | {s * 1e3:.1f} | {s / r['ops_s']:.0%} |")
        rest = sum(list(r["by_type"].values())[args.top:])
        lines += [f"| (the other {max(0, len(r['by_type']) - args.top)} types) | "
                  f"{rest * 1e3:.1f} | {rest / r['ops_s']:.0%} |", ""]
    write_results(args.out, "profile_serving", {"cpu": cpu_name(), "threads": args.threads,
                                                "size": args.size, "results": results}, lines)


if __name__ == "__main__":
    main()
