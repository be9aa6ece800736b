"""retinamask-tf command line: train, evaluate, export. Each mode is a module of
``retinamask_tf.cli``; this file parses the flags and dispatches.

  python main.py --mode=train_and_eval --config=configs/demo.yaml --model_dir=runs/demo
  python main.py --mode=eval --model_dir=runs/demo
  python main.py --mode=export --model_dir=runs/demo [--export_dir=DIR] [--include_masks] \
      [--export_version=N] [--tflite_variants=float32,float16,dynamic_int8,int8] [--openvino]
  python main.py --mode=predict --model_dir=runs/demo --images='photos/*.jpg' [--output_dir=DIR]
  python main.py --mode=predict --model=runs/demo/export/saved_model --images=a.jpg,b.png
  python main.py --mode=plots --model_dir=runs/demo      # beta (Figure 3) and loss curves
  python main.py --mode=inspect_data --config=configs/fruits_nuts.yaml --model_dir=runs/fruits
  python main.py --mode=make_tfrecords --config=configs/fruits_nuts.yaml --model_dir=runs/fruits
  python main.py --mode=import_weights --source=torchvision_retinanet \
      --weights=retinanet_resnet50_fpn_coco-eeacb38b.pth --model_dir=runs/tv_retinanet
  python main.py --mode=train --config=configs/coco_r50_fpn.yaml \
      --override data.train_json=/data/coco/annotations/instances_train2017.json ...
"""

import logging
import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the console unless asked for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from retinamask_tf.weights.sources import SOURCES  # noqa: E402  (no TensorFlow)

flags.DEFINE_enum("mode", "train_and_eval",
                  ["train", "eval", "train_and_eval", "export", "predict", "plots",
                   "inspect_data", "make_tfrecords", "import_weights"],
                  "What to run.")
flags.DEFINE_multi_string("config", [], "YAML config file(s); later files win. Read by train, "
                          "train_and_eval, inspect_data, make_tfrecords and import_weights; "
                          "without one they use the config.yaml of the run in --model_dir. "
                          "The other modes read the run's config.yaml only.")
flags.DEFINE_multi_string("override", [], "key=value overrides, e.g. train.steps=100. In eval, "
                          "export and predict: the settings inference may change "
                          "(postprocess.*, eval.*, data paths, mask threshold / count).")
flags.DEFINE_string("model_dir", None, "The run directory: config.yaml, checkpoints, logs, "
                    "metrics, exports.")
flags.DEFINE_enum("backbone_weights", None, ["none", "imagenet"],
                  "Shortcut for model.backbone.weights (imagenet needs internet).")
flags.DEFINE_string("export_dir", None, "Where exports go (default MODEL_DIR/export): "
                    "saved_model[_masks]/<version>/ (TF Serving's layout: point "
                    "--model_base_path at saved_model), tflite/ and drawn/.")
flags.DEFINE_integer("export_version", None, "The SavedModel's version folder (default: the "
                     "checkpoint's step); an existing one is replaced.")
flags.DEFINE_bool("include_masks", False, "Export the mask head too (detection_masks output).")
flags.DEFINE_bool("openvino", False, "Export also writes an OpenVINO IR of the detector "
                  "(export/openvino/model.xml, batch 1, detection only; needs the openvino "
                  "extra: pip install -e '.[openvino]'; see docs/export.md).")
flags.DEFINE_bool("freeze_saved_model", False,
                  "SavedModel weights as graph constants instead of variables: 2-10% faster "
                  "on CPU, 3.4-3.9x the memory once loaded, no variables to fine-tune "
                  "(see docs/export.md).")
flags.DEFINE_enum("saved_model_precision", "float32", ["float32", "bfloat16"],
                  "SavedModel compute precision. bfloat16 (weights stay float32) is for CPUs "
                  "with native bfloat16 (AVX512_BF16 or AMX); see docs/export.md for its "
                  "speed and accuracy. TFLite is unaffected.")
flags.DEFINE_enum("conv_algorithm", None, ["auto", "direct", "winograd"],
                  "Exports: how the 3x3 convs compute (default: the run's "
                  "model.conv_algorithm). direct keeps float TFLite files smallest: Winograd "
                  "stores 4x larger transformed kernels (see docs/export.md).")
flags.DEFINE_list("tflite_variants", ["float32", "float16", "dynamic_int8", "int8"],
                  "TFLite variants written by --mode=export and after train_and_eval "
                  "(empty: no TFLite).")
flags.DEFINE_list("images", [], "--mode=predict: image files, globs or directories.")
flags.DEFINE_string("model", None, "--mode=predict: an export to run instead of --model_dir's "
                    "latest checkpoint: a SavedModel (or its TF Serving base folder: the "
                    "highest version), a .tflite file or an OpenVINO .xml.")
flags.DEFINE_string("output_dir", None, "predict, inspect_data, make_tfrecords: where the outputs "
                    "go (default: under MODEL_DIR, or MODEL/../predict; beside MODEL_DIR when "
                    "it holds a training run, which these modes only read).")
flags.DEFINE_float("score_threshold", 0.3, "--mode=predict: detections drawn (results.json "
                   "has them all).")
flags.DEFINE_integer("num_shards", 8, "--mode=make_tfrecords: TFRecord files per split.")
flags.DEFINE_bool("export", True, "train_and_eval: export SavedModel + TFLite at the end.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy for training (multi_worker_mirrored reads TF_CONFIG).")
flags.DEFINE_string("tpu", None, "--strategy=tpu: TPU name or address ('' = local TPU VM).")
flags.DEFINE_enum("source", None, list(SOURCES),
                  "--mode=import_weights: what kind of checkpoint --weights is.")
flags.DEFINE_string("weights", None, "--mode=import_weights: the PyTorch checkpoint (.pth).")
FLAGS = flags.FLAGS


# Modes that build a config from --config files (or the run's config.yaml); the others
# restore a run and read only its config.yaml.
CONFIG_MODES = ("train", "train_and_eval", "inspect_data", "make_tfrecords", "import_weights")
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-?")


class UsageError(Exception):
    """A flag is missing or does not fit the mode: printed as one line, exit status 2."""


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags are written "
              "--name=value)", file=sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        _check_flags()  # before TensorFlow is imported: a wrong command fails at once
    except UsageError as e:
        print(f"error: {e} (python main.py --help lists the flags)", file=sys.stderr)
        return 2
    from retinamask_tf.native_noise import import_tensorflow
    import_tensorflow()  # before anything else imports it: quiet start-up on CPU machines
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from retinamask_tf import config as config_lib
    from retinamask_tf.data.errors import DatasetError
    from retinamask_tf.modeling.retinamask import NonFiniteLossError
    from retinamask_tf.run_dir import RunDirError
    from retinamask_tf.training.run_lock import RunLockedError
    overrides = list(FLAGS.override)
    if FLAGS.backbone_weights:
        overrides.append("model.backbone.weights="
                         + ("null" if FLAGS.backbone_weights == "none" else "imagenet"))
    try:
        return _dispatch(overrides)
    except UsageError as e:
        print(f"error: {e} (python main.py --help lists the flags)", file=sys.stderr)
        return 2
    except (config_lib.ConfigError, DatasetError, RunDirError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where a folder should be, no space or permission, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:  # the message names the step and the last checkpoint
        print(f"error: training stopped: {e}", file=sys.stderr)
        return 3


def _check_flags():
    """The flags the mode needs are there, and none it would ignore: one line if not."""
    mode = FLAGS.mode
    if not FLAGS.model_dir and not (mode == "predict" and FLAGS.model):
        needs = "--model_dir (or --model, an export)" if mode == "predict" else "--model_dir"
        raise UsageError(f"--mode={mode} needs {needs}")
    for path in FLAGS.config:
        if not os.path.isfile(path):
            raise UsageError(f"--config={path}: no such file")
    if FLAGS.config and mode not in CONFIG_MODES:
        raise UsageError(f"--config is not read by --mode={mode}: it uses the config.yaml of "
                         f"the run in --model_dir (change inference settings with --override)")
    if mode == "plots" and FLAGS.override:
        raise UsageError("--mode=plots takes no --override: it draws the run's logs")
    if mode == "predict" and not FLAGS.images:
        raise UsageError("--mode=predict needs --images (files, globs or directories)")
    if mode == "import_weights" and not (FLAGS.source and FLAGS.weights):
        raise UsageError("--mode=import_weights needs --source and --weights")
    if FLAGS.model and mode != "predict":
        raise UsageError(f"--model is read by --mode=predict only; --mode={mode} uses "
                         "--model_dir")


def _configs(model_dir):
    """The --config files, else the config.yaml of the run in ``model_dir``."""
    from retinamask_tf import run_dir
    if FLAGS.config:
        return FLAGS.config
    if model_dir and os.path.exists(run_dir.config_path(model_dir)):
        return [run_dir.config_path(model_dir)]  # continue / fine-tune / inspect the run
    if FLAGS.mode in ("inspect_data", "make_tfrecords"):
        raise UsageError(f"--mode={FLAGS.mode} needs --config, or a --model_dir holding a "
                         "run's config.yaml")
    return []


def _reader_output(model_dir, name):
    """Where a mode that only reads the data writes: --output_dir, else MODEL_DIR/<name>
    for a fresh folder, or beside a training run (``<run>-<name>``), never into it."""
    from retinamask_tf import run_dir
    if FLAGS.output_dir:
        return FLAGS.output_dir
    if os.path.exists(run_dir.config_path(model_dir)):
        return os.path.normpath(model_dir) + f"-{name}"
    return os.path.join(model_dir, name)


def _export_args():
    return dict(export_dir=FLAGS.export_dir, include_masks=FLAGS.include_masks,
                version=FLAGS.export_version, freeze=FLAGS.freeze_saved_model,
                precision=FLAGS.saved_model_precision,
                tflite_variants=FLAGS.tflite_variants, openvino=FLAGS.openvino)


def _export_overrides():
    """--conv_algorithm: a shortcut for the exports' model.conv_algorithm override."""
    return [f"model.conv_algorithm={FLAGS.conv_algorithm}"] if FLAGS.conv_algorithm else []


def _dispatch(overrides):
    from retinamask_tf import config as config_lib
    from retinamask_tf.cli import evaluate, export, inspect_data, make_tfrecords, plots, predict
    mode, model_dir = FLAGS.mode, FLAGS.model_dir
    if mode == "export":
        print("Exported:")
        return export.run(model_dir, overrides=overrides + _export_overrides(), **_export_args())
    if mode == "predict":
        return predict.run(FLAGS.images, model_dir, FLAGS.model, FLAGS.output_dir,
                           FLAGS.score_threshold, overrides)
    if mode == "plots":
        return plots.run(model_dir)
    if mode == "make_tfrecords":
        return make_tfrecords.run(config_lib.load_config(_configs(model_dir), overrides),
                                  _reader_output(model_dir, "tfrecords"), FLAGS.num_shards)
    if mode == "import_weights":
        from retinamask_tf.cli import import_weights
        return import_weights.run(FLAGS.source, FLAGS.weights, model_dir, FLAGS.config, overrides)
    if mode == "inspect_data":
        return inspect_data.run(config_lib.load_config(_configs(model_dir), overrides),
                                _reader_output(model_dir, "inspect"))
    if mode == "eval":
        report = evaluate.run(model_dir, overrides)
        _print_run_outputs(model_dir, report, with_plots=False)
        return 0
    from retinamask_tf.cli import train
    trainer = train.run(config_lib.load_config(_configs(model_dir), overrides), model_dir,
                        FLAGS.strategy, FLAGS.tpu)
    if not trainer.is_chief:  # multi-worker: the chief evaluates and exports
        return 0
    report = evaluate.run(model_dir, val=trainer.val_data) if mode == "train_and_eval" else None
    _print_run_outputs(model_dir, report, with_plots=True)
    if mode == "train_and_eval" and FLAGS.export:
        return export.run(model_dir, datasets=(trainer.train_data, trainer.val_data),
                          overrides=_export_overrides(), **_export_args())
    return 0


def _print_run_outputs(model_dir, report, with_plots):
    from retinamask_tf import run_dir
    from retinamask_tf.cli import plots
    print("\nOutputs:")
    print(f"  config       {run_dir.config_path(model_dir)}")
    print(f"  checkpoints  {run_dir.checkpoint_dir(model_dir)}")
    print(f"  tensorboard  tensorboard --logdir {model_dir}")
    if with_plots:
        plots.run(model_dir)
    if report:
        print(f"  metrics      {report['metrics_path']}")


if __name__ == "__main__":
    if any(a in HELP_FLAGS or a.startswith("--helpfull") for a in sys.argv[1:]):
        FLAGS(sys.argv[:1])  # parse nothing: the defaults, for the listing
        print(__doc__)
        print(FLAGS.main_module_help())
        sys.exit(0)
    app.run(main)
