"""Direct (oneDNN) vs Winograd F(4x4, 3x3) 3x3 convs of ResNet-50-FPN's shapes on this CPU.

  python bench/winograd.py                 # forward, batch 1
  python bench/winograd.py --backward      # forward + gradients of input and kernel, batch 2

Each row: one float32 3x3 stride-1 conv [1 or 2, H, W, Cin] -> Cout in a tf.function, the
two algorithms timed in alternation (``--rounds`` x ``--repeats`` calls each), medians,
the largest difference relative to the output's largest magnitude, and whether
``winograd_pays`` (the ``model.conv_algorithm: auto`` rule) picks Winograd. Writes
``<out>/winograd_bench.json`` and ``winograd_bench.md``.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, write_results  # noqa: E402

# (H, W, Cin, Cout): head and FPN levels at 512x512 (P3 64, P4 32, P5 16) and 800x1344
# (P3 100x168, P4 50x84), the class-logit conv (720 = 9 anchors x 80 classes), and the
# backbone's stride-1 3x3 convs (res2-res5 at 512; res3 and res5 at 800x1344).
SHAPES = [(64, 64, 256, 256), (32, 32, 256, 256), (16, 16, 256, 256),
          (100, 168, 256, 256), (50, 84, 256, 256), (25, 42, 256, 256),
          (64, 64, 256, 720), (32, 32, 256, 720), (16, 16, 256, 720), (100, 168, 256, 720),
          (128, 128, 64, 64), (64, 64, 128, 128), (16, 16, 512, 512),
          (100, 168, 128, 128), (25, 42, 512, 512)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backward", action="store_true", help="time forward + both gradients")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    from retinamask_tf.ops.winograd import winograd_conv3x3, winograd_pays

    batch = 2 if args.backward else 1
    rng = np.random.default_rng(0)
    rows = []
    for h, w, cin, cout in SHAPES:
        x = tf.constant(rng.standard_normal((batch, h, w, cin)).astype(np.float32))
        k = tf.Variable((rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32))
        convs = {"direct": lambda x: tf.nn.conv2d(x, k, 1, "SAME"),
                 "winograd": lambda x: winograd_conv3x3(x, k)}
        fns = {}
        for name, conv in convs.items():
            if args.backward:
                def step(x, conv=conv):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = conv(x)
                        loss = tf.reduce_sum(y * y)
                    return tape.gradient(loss, [x, k])[0]
                fns[name] = tf.function(step)
            else:
                fns[name] = tf.function(conv)
        outs = {name: fn(x).numpy() for name, fn in fns.items()}
        err = float(np.abs(outs["winograd"] - outs["direct"]).max() / np.abs(outs["direct"]).max())
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    fn(x).numpy()
                    times[name].append(time.perf_counter() - t)
        d, wi = (statistics.median(times[n]) for n in ("direct", "winograd"))
        row = {"shape": [batch, h, w, cin, cout], "direct_ms": d * 1e3, "winograd_ms": wi * 1e3,
               "speedup": d / wi, "max_rel_diff": err, "auto_picks_winograd": winograd_pays(h, w, cin, cout)}
        print(row, flush=True)
        rows.append(row)

    what = "forward + input and kernel gradients" if args.backward else "forward"
    lines = [f"# 3x3 conv: direct vs Winograd F(4x4, 3x3), float32, {what}", "",
             f"CPU: {cpu_name()}, TF {tf.__version__}; medians of {args.rounds} x {args.repeats} "
             "alternating calls.", "",
             "| input | Cout | direct ms | Winograd ms | speed-up | max rel. diff | auto |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        b, h, w, cin, cout = r["shape"]
        lines.append(f"| {b}x{h}x{w}x{cin} | {cout} | {r['direct_ms']:.2f} | {r['winograd_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['max_rel_diff']:.1e} | "
                     f"{'winograd' if r['auto_picks_winograd'] else 'direct'} |")
    name = "winograd_bench_backward" if args.backward else "winograd_bench"
    write_results(args.out, name, {"cpu": cpu_name(), "tensorflow": tf.__version__,
                                   "backward": args.backward, "rows": rows}, lines)


if __name__ == "__main__":
    main()
