"""Runs an exported .tflite detector on images with the LiteRT interpreter and prints/draws
the detections. Needs numpy, pillow and ai-edge-litert (no TensorFlow).

  python tflite/run.py --model=runs/demo/export/tflite/model_float32.tflite \
      --image=a.jpg --image='photos/*.webp' --image=folder/ [--output_dir=drawn/] \
      [--score_threshold=0.3] [--threads=2]

Images are shown to the model as displayed (EXIF orientation applied), in any format
PIL reads. An image that cannot be read is named and skipped; the exit status is 2 when
any was.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retinamask_tf.export.litert_runner import LiteRTPredictor  # noqa: E402
from retinamask_tf.image_io import READ_ERRORS, expand_images, read_rgb  # noqa: E402
from retinamask_tf.visualize import draw  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model_<variant>.tflite file")
    p.add_argument("--image", action="append", required=True,
                   help="image file, glob or folder (repeatable)")
    p.add_argument("--output_dir", default=None, help="write <name>.png drawings and detections.json here")
    p.add_argument("--score_threshold", type=float, default=0.3, help="print/draw above this score")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        paths = expand_images(args.image)
    except FileNotFoundError as e:
        print(f"error: --image: {e}", file=sys.stderr)
        return 2
    try:
        predictor = LiteRTPredictor(args.model, num_threads=args.threads)
    except (OSError, ValueError, ImportError) as e:  # no such model, not a model, no runtime
        print(f"error: --model={args.model}: {e}", file=sys.stderr)
        return 2
    results, failed = [], []
    for path in paths:
        try:
            image = read_rgb(path)  # as displayed (EXIF orientation applied)
        except READ_ERRORS as e:
            print(f"error: {path}: unreadable image ({type(e).__name__}: {e}); skipped",
                  file=sys.stderr)
            failed.append(path)
            continue
        start = time.perf_counter()
        det = predictor(image)
        ms = (time.perf_counter() - start) * 1000
        shown = det.above(args.score_threshold)
        print(f"{path}: {len(shown)} detections >= {args.score_threshold} "
              f"({len(det)} in all), {ms:.0f} ms")
        for box, name, cls, score in zip(shown.boxes, shown.names, shown.classes, shown.scores):
            y0, x0, y1, x1 = box
            print(f"  {name:>16s} (id {int(cls)})  {score:.3f}  "
                  f"[ymin {y0:.1f}, xmin {x0:.1f}, ymax {y1:.1f}, xmax {x1:.1f}]")
        results.append({"image": path, "boxes_yxyx": det.boxes.round(2).tolist(),
                        "scores": det.scores.round(5).tolist(),
                        "classes": det.classes.tolist(), "names": list(det.names)})
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            draw(image, det, args.score_threshold).save(out)
            print(f"  drawn: {out}")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "detections.json"), "w") as f:
            json.dump(results, f)
    if failed:
        print(f"{len(failed)} of {len(paths)} images could not be read (named above)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
