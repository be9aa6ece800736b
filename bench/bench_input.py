"""Input-pipeline throughput: training batches per second from COCO JSON and from TFRecords.

  python bench/bench_input.py [--json $RETINAMASK_TEST_DATA/coco128/annotations.json
      --images $RETINAMASK_TEST_DATA/coco128/images] [--short_sides 512,800] [--batches 40]

The training pipeline (decode, resize, random flip, pad, and with ``--masks`` the
box-frame instance masks rasterised from polygons) at batch ``--batch_size``, on this
machine's cores, images/s after a warm-up. Compare with the training step's consumption
(bench/bench_model.py: images per second = batch / step time). Writes
``<out>/input_bench.json`` and ``input_bench.md``.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import write_results  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DATASETS = os.environ.get("RETINAMASK_TEST_DATA", "data")  # the folder holding coco128/
COCO128 = os.path.join(DATASETS, "coco128")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=os.path.join(COCO128, "annotations.json"))
    p.add_argument("--images", default=os.path.join(COCO128, "images"))
    p.add_argument("--short_sides", default="512,800")
    p.add_argument("--long_side_ratio", type=float, default=1333 / 800)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()

    import tensorflow as tf

    from retinamask_tf.data import coco, pipeline, tfrecord

    ds = pipeline.verify_images(coco.load_coco(args.json, args.images), "full", None)
    tmp = tempfile.mkdtemp()
    source = tfrecord.load_source(tfrecord.write_tfrecords(ds, os.path.join(tmp, "train"), 4))
    rows = []
    for short in (int(s) for s in args.short_sides.split(",")):
        long_side = int(round(short * args.long_side_ratio))
        side = -(-long_side // 128) * 128
        for masks in (False, True):
            for name, data in (("json", ds), ("tfrecord", source)):
                pipe = pipeline.build_dataset(data, pipeline.InputSpec(args.batch_size, (side, side), short, long_side, 100, training=True, mask_size=112 if masks else None))
                it = iter(pipe)
                for _ in range(5):
                    next(it)
                start = time.perf_counter()
                for _ in range(args.batches):
                    next(it)
                rate = args.batches * args.batch_size / (time.perf_counter() - start)
                rows.append({"short_side": short, "long_side": long_side, "padded": side,
                             "masks": masks, "source": name, "images_per_s": rate})
                print(rows[-1], flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}"
    result = {"json": args.json, "num_images": len(ds.records), "batch_size": args.batch_size,
              "batches": args.batches, "machine": machine, "rows": rows}
    lines = [f"{args.json} ({len(ds.records)} images), batch {args.batch_size}, {machine}", "",
             "| short side | padded to | masks | source | images/s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['short_side']} | {r['padded']} | {'yes' if r['masks'] else 'no'} | "
                     f"{r['source']} | {r['images_per_s']:.1f} |")
    write_results(args.out, "input_bench", result, lines)


if __name__ == "__main__":
    main()
