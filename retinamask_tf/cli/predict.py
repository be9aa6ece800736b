"""--mode=predict: detections drawn on each image plus a COCO results JSON."""

import os
import sys

from retinamask_tf import predict
from retinamask_tf.image_io import expand_images
from retinamask_tf.progress import Progress
from retinamask_tf.run_dir import RunDirError


def run(images, model_dir=None, model=None, output_dir=None, score_threshold=0.3,
        overrides=()):
    """``images``: files, globs or folders. Runs ``model`` (a SavedModel, its TF Serving base
    folder, or a .tflite file) when given, else ``model_dir``'s latest checkpoint (with
    ``overrides``: inference settings), through ``predict.load``. Returns 0, or 2 when an
    input is missing or an image failed (each named on stderr)."""
    try:
        paths = expand_images(images)
    except FileNotFoundError as e:
        print(f"error: --images: {e}", file=sys.stderr)
        return 2
    try:
        predictor = predict.load(model or model_dir, overrides=tuple(overrides))
    except (RunDirError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if model:
        default_out = os.path.join(os.path.dirname(os.path.normpath(model)), "predict")
    else:
        default_out = os.path.join(model_dir, "predict")
    out_dir = output_dir or default_out
    print(f"Predicting {len(paths)} images with {predictor.source}", flush=True)
    out = predict.predict_files(predictor, paths, out_dir, score_threshold,
                                Progress(len(paths), unit="image"))
    for path, reason in out["failed"]:
        print(f"error: {path}: {reason}; skipped", file=sys.stderr)
    print(f"\nOutputs:\n  drawn        {out_dir}/ ({len(out['drawn'])} images, detections "
          f">= {score_threshold})\n  results      {out['results_json']} "
          f"({out['num_detections']} detections, COCO format with file_name)")
    if out["failed"]:
        print(f"{len(out['failed'])} of {len(paths)} images failed (named above)",
              file=sys.stderr)
        return 2
    return 0
