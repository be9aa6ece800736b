"""Runs an exported .tflite detector on images with the LiteRT interpreter and prints/draws
the detections. Needs numpy, pillow and ai-edge-litert (no TensorFlow).

  python tflite/run.py --model=runs/demo/export/tflite/model_float32.tflite \
      --image=a.jpg --image=b.png [--output_dir=drawn/] [--score_threshold=0.3] [--threads=2]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from retinamask_tf.export.litert_runner import LiteRTDetector  # noqa: E402
from retinamask_tf.visualize import draw_detections  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model_<variant>.tflite file")
    p.add_argument("--image", action="append", required=True, help="image file (repeatable)")
    p.add_argument("--output_dir", default=None, help="write <name>.png drawings and detections.json here")
    p.add_argument("--score_threshold", type=float, default=0.3, help="print/draw above this score")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    detector = LiteRTDetector(args.model, num_threads=args.threads)
    results = []
    for path in args.image:
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            print(f"error: cannot read image {path}: {e}", file=sys.stderr)
            return 2
        start = time.perf_counter()
        det = detector.detect(image)
        ms = (time.perf_counter() - start) * 1000
        keep = det["scores"] >= args.score_threshold
        print(f"{path}: {int(keep.sum())} detections >= {args.score_threshold} "
              f"({len(det['scores'])} in all), {ms:.0f} ms")
        for box, name, cls, score in zip(det["boxes"][keep], np.array(det["names"])[keep],
                                         det["classes"][keep], det["scores"][keep]):
            y0, x0, y1, x1 = box
            print(f"  {name:>16s} (id {int(cls)})  {score:.3f}  "
                  f"[ymin {y0:.1f}, xmin {x0:.1f}, ymax {y1:.1f}, xmax {x1:.1f}]")
        results.append({"image": path, "boxes_yxyx": det["boxes"].round(2).tolist(),
                        "scores": det["scores"].round(5).tolist(),
                        "category_ids": det["classes"].tolist(), "names": det["names"]})
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            draw_detections(image, det["boxes"], det["classes"], det["scores"], det["names"],
                            args.score_threshold).save(out)
            print(f"  drawn: {out}")
    if args.output_dir:
        with open(os.path.join(args.output_dir, "detections.json"), "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
