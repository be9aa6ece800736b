"""Converts a training directory's checkpoint to TFLite (builtin ops only, NMS inside).

  python tflite/convert.py --model_dir=runs/demo [--output_dir=runs/demo/export/tflite] \
      [--variants=float32,float16,dynamic_int8,int8] [--num_calibration_images=100] \
      [--include_masks]

Writes model_<variant>.tflite (and model_<variant>_masks.tflite), label_map.json and
tflite_model.json; run one with
``python tflite/run.py --model=.../model_float32.tflite --image=photo.jpg``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model_dir", None, "Training directory (config.yaml, label_map.json, checkpoints/).")
flags.DEFINE_string("output_dir", None, "Default: MODEL_DIR/export/tflite.")
flags.DEFINE_list("variants", ["float32", "float16", "dynamic_int8", "int8"], "Which TFLite variants.")
flags.DEFINE_integer("num_calibration_images", 100, "Training images that calibrate the int8 variant.")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (default: the latest).")
flags.DEFINE_bool("include_masks", False, "Also model_<variant>_masks.tflite (detection_masks).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from retinamask_tf.export.saved_model import ExportError
    from retinamask_tf.export.tflite import export_tflite
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    out = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "export", "tflite")
    try:
        paths = export_tflite(FLAGS.model_dir, out, FLAGS.variants, FLAGS.num_calibration_images,
                              FLAGS.checkpoint, include_masks=FLAGS.include_masks)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for variant, path in paths.items():
        print(f"TFLite {variant:18s} {path}  ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    app.run(main)
