"""How close the network runs to this CPU's arithmetic peak: the convolution FLOPs of
ResNet-50-FPN RetinaNet at each size, counted from its graph, against the GFLOP/s TF
reaches on a large matmul and on one of the head's 3x3 convolutions, in float32 and
bfloat16.

  python bench/cpu_peak.py [--sizes 512x512,800x1344] [--threads 2]

``floor_s``: the network's conv FLOPs at the best rate measured here; no float32 (or
bfloat16) runtime on this CPU runs the network in less, whatever it does around the
convolutions. Writes ``<out>/cpu_peak.json`` and ``.md``.
"""

import argparse
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.bench_model import R50  # noqa: E402
from bench.report import cpu_name, write_results  # noqa: E402


def conv_flops(graph):
    """(number of Conv2D ops, their FLOPs: 2 x multiply-adds) in a traced ``graph``."""
    n, flops = 0, 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            out, kernel = op.outputs[0].shape, op.inputs[1].shape
            n += 1
            flops += 2 * out[1] * out[2] * out[3] * kernel[0] * kernel[1] * kernel[2]
    return n, flops


def _rate(fn, flops, repeats):
    """GFLOP/s of ``fn`` (doing ``flops``) at its fastest of ``repeats`` after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512x512,800x1344")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from retinamask_tf import config as C
    from retinamask_tf.modeling import factory

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rates = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.normal([4096, 4096]), dtype)
        b = tf.cast(tf.random.normal([4096, 4096]), dtype)
        matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
        x = tf.cast(tf.random.normal([1, 64, 64, 256]), dtype)
        k = tf.cast(tf.random.normal([3, 3, 256, 256]), dtype)
        conv = tf.function(lambda: tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"),
                                                         tf.float32)))
        rates[dtype.name] = {
            "matmul_4096": _rate(lambda: matmul().numpy(), 2 * 4096 ** 3, args.repeats),
            "conv3x3_64x64x256": _rate(lambda: conv().numpy(), 2 * 64 * 64 * 256 * 256 * 9,
                                       args.repeats * 3)}
        print(dtype.name, rates[dtype.name], flush=True)
    sizes = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        cfg = C.load_config([], R50 + ["model.mask_head.enabled=false", "data.pad_stride=32"])
        model = factory.build_model(cfg, image_size=(h, w))
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec([1, h, w, 3], tf.float32)).graph
        n, flops = conv_flops(graph)
        row = {"size": size, "convs": n, "gflops": flops / 1e9}
        for name, r in rates.items():
            row[f"floor_s_{name}"] = flops / 1e9 / max(r.values())
        sizes.append(row)
        print(row, flush=True)
    machine = {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "threads": args.threads, "tensorflow": tf.__version__}
    lines = [f"{machine['cpu']}, {machine['cpus']} CPUs, {args.threads} threads, TF "
             f"{tf.__version__}", "", "| dtype | matmul 4096^3 GFLOP/s | 3x3 conv 64x64x256->256 "
             "GFLOP/s |", "|---|---|---|"]
    for name, r in rates.items():
        lines.append(f"| {name} | {r['matmul_4096']:.0f} | {r['conv3x3_64x64x256']:.0f} |")
    lines += ["", "| ResNet-50-FPN RetinaNet input | Conv2D ops | conv GFLOPs | floor s float32 | "
              "floor s bfloat16 |", "|---|---|---|---|---|"]
    for row in sizes:
        lines.append(f"| {row['size']} | {row['convs']} | {row['gflops']:.1f} | "
                     f"{row['floor_s_float32']:.3f} | {row['floor_s_bfloat16']:.3f} |")
    write_results(args.out, "cpu_peak", {"machine": machine, "rates": rates, "sizes": sizes},
                  lines)


if __name__ == "__main__":
    main()
