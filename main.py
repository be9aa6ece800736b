"""retinamask-tf command line: train, evaluate, export.

  python main.py --mode=train_and_eval --config=configs/demo.yaml --model_dir=runs/demo
  python main.py --mode=eval --model_dir=runs/demo
  python main.py --mode=export --model_dir=runs/demo [--export_dir=DIR] [--include_masks] \
      [--export_version=N] [--tflite_variants=float32,float16,dynamic_int8,int8]
  python main.py --mode=predict --model_dir=runs/demo --images='photos/*.jpg' [--output_dir=DIR]
  python main.py --mode=predict --saved_model=runs/demo/export/saved_model --images=a.jpg,b.png
  python main.py --mode=plots --model_dir=runs/demo      # beta (Figure 3) and loss curves
  python main.py --mode=inspect_data --config=configs/fruits_nuts.yaml --model_dir=runs/fruits
  python main.py --mode=make_tfrecords --config=configs/fruits_nuts.yaml --model_dir=runs/fruits
  python main.py --mode=train --config=configs/coco_r50_fpn.yaml \
      --override data.train_json=/data/coco/annotations/instances_train2017.json ...
"""

import logging
import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the console unless asked for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_enum("mode", "train_and_eval",
                  ["train", "eval", "train_and_eval", "export", "predict", "plots",
                   "inspect_data", "make_tfrecords"],
                  "What to run.")
flags.DEFINE_multi_string("config", [], "YAML config file(s); later files win.")
flags.DEFINE_multi_string("override", [], "key=value overrides, e.g. train.steps=100.")
flags.DEFINE_string("model_dir", None, "Folder for the config, checkpoints, logs and metrics.")
flags.DEFINE_enum("backbone_weights", None, ["none", "imagenet"],
                  "Shortcut for model.backbone.weights (imagenet needs internet).")
flags.DEFINE_string("export_dir", None, "Where exports go (default MODEL_DIR/export): "
                    "saved_model[_masks]/<version>/ (TF Serving's layout: point "
                    "--model_base_path at saved_model), tflite/ and drawn/.")
flags.DEFINE_integer("export_version", None, "The SavedModel's version folder (default: the "
                     "checkpoint's step); an existing one is replaced.")
flags.DEFINE_bool("include_masks", False, "Export the mask head too (detection_masks output).")
flags.DEFINE_bool("freeze_saved_model", True,
                  "SavedModel weights as graph constants: faster on CPU (oneDNN keeps each conv "
                  "filter in its own layout), more memory once loaded; --nofreeze_saved_model "
                  "keeps variables (see README, Export).")
flags.DEFINE_list("tflite_variants", ["float32", "float16", "dynamic_int8", "int8"],
                  "TFLite variants written by --mode=export and after train_and_eval "
                  "(empty: no TFLite).")
flags.DEFINE_list("images", [], "--mode=predict: image files, globs or directories.")
flags.DEFINE_string("saved_model", None, "--mode=predict: an exported SavedModel (or its TF "
                    "Serving base folder: the highest version) to run instead of --model_dir's "
                    "latest checkpoint (masks only if exported with them).")
flags.DEFINE_string("output_dir", None, "--mode=predict: where the drawings and results.json go "
                    "(default: MODEL_DIR/predict, or SAVED_MODEL/../predict).")
flags.DEFINE_float("score_threshold", 0.3, "--mode=predict: detections drawn (results.json "
                   "has them all).")
flags.DEFINE_integer("num_shards", 8, "--mode=make_tfrecords: TFRecord files per split.")
flags.DEFINE_bool("export", True, "train_and_eval: export SavedModel + TFLite at the end.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy for training (multi_worker_mirrored reads TF_CONFIG).")
flags.DEFINE_string("tpu", None, "--strategy=tpu: TPU name or address ('' = local TPU VM).")
FLAGS = flags.FLAGS
_HELD = []  # run locks this process keeps until it exits


def _train(config, model_dir):
    from retinamask_tf.training import distribute, run_lock
    from retinamask_tf.training.trainer import Trainer
    strategy = distribute.build_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
    # Held until this process ends (evaluation and export included); each worker of a
    # multi-worker run locks the folder it writes.
    _HELD.append(run_lock.RunLock(distribute.worker_dir(model_dir, strategy)))
    trainer = Trainer(config, model_dir, strategy=strategy)
    say = print if trainer.is_chief else (lambda *a, **k: None)
    say(f"Data: {trainer.train_data.summary()}\n      {trainer.val_data.summary()}", flush=True)
    truncated = trainer.skips.truncation_summary(config.data.max_instances)
    if truncated:
        say(f"      {truncated}", flush=True)
    c, replicas = trainer.config, strategy.num_replicas_in_sync
    split = f" ({replicas} replicas x {c.train.batch_size // replicas})" if replicas > 1 else ""
    say(f"Training {c.train.steps} steps, batch {c.train.batch_size}{split}, "
        f"{trainer.model.count_params():,} parameters, {trainer.train_data.num_classes} classes; "
        f"model_dir={model_dir}", flush=True)
    result = trainer.train()
    dropped = trainer.skips.summary()
    if dropped:
        say(f"Data: {dropped}", flush=True)
    if result["steps_run"]:
        say(f"Training done at step {trainer.step}: loss {result['total_loss']:.4f}, "
            f"{result['steps_per_sec']:.2f} steps/s", flush=True)
    else:
        say(f"Training had already finished: the checkpoint is at step {trainer.step} "
            f"(train.steps={c.train.steps}); nothing to train", flush=True)
    return trainer


def _eval(model_dir, trainer=None, overrides=()):
    from retinamask_tf.evaluation.coco_evaluator import evaluate, fmt, format_table
    from retinamask_tf.training.trainer import Trainer, read_config
    if trainer is None:
        config = read_config(model_dir, overrides)
        trainer = Trainer(config, model_dir, write_config=False)  # eval overrides stay out
        if not trainer.restore():
            raise SystemExit(f"no checkpoint in {model_dir}/checkpoints to evaluate")
    report = evaluate(trainer.model, trainer.val_data, trainer.config,
                      out_dir=os.path.join(model_dir, "eval"), step=trainer.step,
                      max_images=trainer.config.eval.max_images)
    for kind, table in (("bbox", "per_class"), ("segm", "per_class_segm")):
        if kind not in report:
            continue
        m = report[kind]
        first = "the first " if report["partial"] else ""
        print(f"\nCOCO {kind} on {first}{report['num_images']} val images (step {report['step']}): "
              + "  ".join(f"{k} {fmt(m[k])}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
              + ("  (- : no ground truth of that size)" if None in m.values() else ""))
        print(format_table(report[table]))
    if report["dropped_images"]:
        print(f"({len(report['dropped_images'])} val images could not be decoded and are not in "
              "these AP figures: " + ", ".join(f"{i} ({p}: {r})" for i, (p, r)
                                               in report["dropped_images"].items()) + ")")
    if report["skipped_images"]:
        print(f"({report['skipped_images']} val images were skipped at start-up (see the Data: "
              "line) and are not in these AP figures)")
    return report


def _draw_examples(out_dir, val, tflite_path, num_images=4):
    """Runs the TFLite model on the first val images, draws them into ``out_dir``, prints
    where they went and the command that does the same for any image."""
    from retinamask_tf.export.litert_runner import LiteRTDetector
    from retinamask_tf.image_io import read_rgb
    from retinamask_tf.visualize import draw_detections
    detector = LiteRTDetector(tflite_path)
    os.makedirs(out_dir, exist_ok=True)
    for record in val.records[:num_images]:
        image = read_rgb(record.path, record.orientation)  # the annotations' frame
        det = detector.detect(image)
        draw_detections(image, det["boxes"], det["classes"], det["scores"], det["names"]).save(
            os.path.join(out_dir, f"{record.image_id}.png"))
    print(f"  drawn        {out_dir}/ ({min(num_images, len(val.records))} val images, "
          "TFLite detections >= 0.3)")
    if val.records:
        print(f"  try          python tflite/run.py --model={tflite_path} "
              f"--image={val.records[0].path} --output_dir={out_dir}")


def _predict():
    """--mode=predict: detections drawn on each image plus a COCO results JSON."""
    from retinamask_tf import predict
    from retinamask_tf.export.saved_model import ExportError
    from retinamask_tf.image_io import expand_images
    from retinamask_tf.training.progress import Progress
    if not FLAGS.images:
        raise app.UsageError("--mode=predict needs --images (files, globs or directories)")
    try:
        paths = expand_images(FLAGS.images)
    except FileNotFoundError as e:
        print(f"error: --images: {e}", file=sys.stderr)
        return 2
    if FLAGS.saved_model:
        try:
            predictor = predict.SavedModelPredictor(FLAGS.saved_model)
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        source = predictor.export_dir
        default_out = os.path.join(os.path.dirname(os.path.normpath(FLAGS.saved_model)), "predict")
    else:
        try:
            predictor = predict.CheckpointPredictor(FLAGS.model_dir)
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        source = f"{FLAGS.model_dir} (latest checkpoint)"
        default_out = os.path.join(FLAGS.model_dir, "predict")
    out_dir = FLAGS.output_dir or default_out
    print(f"Predicting {len(paths)} images with {source}", flush=True)
    out = predict.predict_files(predictor, paths, out_dir, FLAGS.score_threshold,
                                Progress(len(paths), unit="image"))
    for path, reason in out["failed"]:
        print(f"error: {path}: {reason}; skipped", file=sys.stderr)
    print(f"\nOutputs:\n  drawn        {out_dir}/ ({len(out['drawn'])} images, detections "
          f">= {FLAGS.score_threshold})\n  results      {out['results_json']} "
          f"({out['num_detections']} detections, COCO format with file_name)")
    if out["failed"]:
        print(f"{len(out['failed'])} of {len(paths)} images failed (named above)",
              file=sys.stderr)
        return 2
    return 0


def _plots(model_dir):
    """beta.png (the paper's Figure 3) and losses.png from the run's TensorBoard logs;
    prints where they went, or why there are none (returns False)."""
    from retinamask_tf import plots
    from retinamask_tf.training.trainer import read_config
    try:
        beta_hat = read_config(model_dir).loss.beta
        paths = plots.write_training_plots(model_dir, beta_hat)
    except (ImportError, FileNotFoundError) as e:
        print(f"  plots        none: {e}")
        return False
    print(f"  plots        {paths['beta']} (running mean of |x| and beta per coordinate), "
          f"{paths['losses']}")
    return True


def _inspect(config, model_dir):
    """--mode=inspect_data: statistics, anchor coverage, plots and drawings of both splits."""
    from retinamask_tf.data import inspector, pipeline
    train, val = pipeline.load_splits(config.data)
    for name, ds in (("train", train), ("val", val)):
        print(f"Data: {ds.summary()}")
        if not hasattr(ds, "records"):
            print("  (streamed from TFRecords or TFDS: not inspected here; inspect the COCO "
                  "JSON the TFRecords were written from)\n")
            continue
        out = os.path.join(model_dir, "inspect", name)
        stats, paths = inspector.write_report(ds, config, out)
        print(inspector.format_report(stats))
        print(f"  stats        {paths['stats']}")
        print(f"  plots        {paths.get('plots', '(install matplotlib for the plots)')}")
        print(f"  drawn        {os.path.dirname(paths['drawn'][0]) if paths['drawn'] else '-'}/"
              f" ({len(paths['drawn'])} images with their boxes and masks)\n")


def _make_tfrecords(config, model_dir):
    """--mode=make_tfrecords: both splits (images checked first) as sharded TFRecords."""
    from retinamask_tf import config as config_lib
    from retinamask_tf.data import pipeline, tfrecord
    from retinamask_tf.training.progress import Progress
    # Always from the JSON (a data.train_tfrecord in the config would make train a
    # TFRecord source, which has no records to write).
    config = config_lib.replace(config, **{"data.train_tfrecord": None})
    if config.data.kind == "tfds":
        raise config_lib.ConfigError("config key 'data.kind': make_tfrecords writes a COCO "
                                     "JSON dataset; a TFDS dataset is already stored as records")
    train, val = pipeline.load_splits(config.data)
    out_dir = os.path.join(model_dir, "tfrecords")
    for name, ds in (("train", train), ("val", val)):
        print(f"Data: {ds.summary()}")
        bar = Progress(len(ds.records), unit="image")
        meta = tfrecord.write_tfrecords(ds, os.path.join(out_dir, name), FLAGS.num_shards,
                                        progress=bar.update)
        print(f"  {name:5s} {meta}")
    print(f"Train from them with: --override data.train_tfrecord={os.path.join(out_dir, 'train-meta.json')}")


def _export(model_dir, datasets=None):
    """SavedModel (+ TFLite variants) of the run's latest checkpoint; prints where they went.
    ``datasets``: the run's (train, val) splits if already loaded (TFLite calibration and
    the drawings read them). Returns False (after printing the error) when the run cannot
    be exported."""
    from retinamask_tf.export.saved_model import ExportError, export_servable
    root = FLAGS.export_dir or os.path.join(model_dir, "export")
    base = os.path.join(root, "saved_model" + ("_masks" if FLAGS.include_masks else ""))
    tflite_dir = os.path.join(root, "tflite")
    try:
        export_dir = export_servable(model_dir, base, FLAGS.export_version, FLAGS.include_masks,
                                     freeze=FLAGS.freeze_saved_model)
        print(f"  SavedModel   {export_dir} (signatures serving_default, serve_image_bytes; "
              f"inspect: saved_model_cli show --dir {export_dir} --all)\n"
              f"  TF Serving   --model_base_path={os.path.abspath(base)} (serves its highest "
              "version)", flush=True)
        if FLAGS.tflite_variants:
            from retinamask_tf.data import pipeline
            from retinamask_tf.export.tflite import export_tflite
            from retinamask_tf.training.trainer import read_config
            train, val = datasets or pipeline.load_splits(read_config(model_dir).data)
            paths = export_tflite(model_dir, tflite_dir, FLAGS.tflite_variants, progress=None,
                                  train_data=train)
            for variant, path in paths.items():
                print(f"  TFLite       {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
            _draw_examples(os.path.join(root, "drawn"), val, paths[FLAGS.tflite_variants[0]])
    except (ExportError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    return True


def main(argv):
    del argv
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from retinamask_tf.native_noise import import_tensorflow
    import_tensorflow()  # before anything else imports it: quiet start-up on CPU machines
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from retinamask_tf import config as config_lib
    from retinamask_tf.data.errors import DatasetError
    from retinamask_tf.modeling.retinamask import NonFiniteLossError
    from retinamask_tf.training.run_lock import RunLockedError
    if FLAGS.mode == "predict" and FLAGS.saved_model:
        pass  # runs an exported model; no training directory needed
    elif not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    overrides = list(FLAGS.override)
    if FLAGS.backbone_weights:
        overrides.append("model.backbone.weights="
                         + ("null" if FLAGS.backbone_weights == "none" else "imagenet"))
    try:
        if FLAGS.mode == "export":
            print("Exported:")
            return 0 if _export(FLAGS.model_dir) else 2
        if FLAGS.mode == "predict":
            return _predict()
        if FLAGS.mode == "plots":
            return 0 if _plots(FLAGS.model_dir) else 2
        if FLAGS.mode == "make_tfrecords":
            _make_tfrecords(config_lib.load_config(FLAGS.config, overrides), FLAGS.model_dir)
            return 0
        if FLAGS.mode == "inspect_data":
            _inspect(config_lib.load_config(FLAGS.config, overrides), FLAGS.model_dir)
            return 0
        if FLAGS.mode == "eval":
            report = _eval(FLAGS.model_dir, overrides=overrides)
        else:
            config = config_lib.load_config(FLAGS.config, overrides)
            trainer = _train(config, FLAGS.model_dir)
            if not trainer.is_chief:  # multi-worker: the chief evaluates and exports
                return 0
            report = _eval(FLAGS.model_dir, trainer) if FLAGS.mode == "train_and_eval" else None
    except (config_lib.ConfigError, DatasetError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where a folder should be, no space or permission, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:  # the message names the step and the last checkpoint
        print(f"error: training stopped: {e}", file=sys.stderr)
        return 3
    print("\nOutputs:")
    print(f"  config       {os.path.join(FLAGS.model_dir, 'config.yaml')}")
    print(f"  checkpoints  {os.path.join(FLAGS.model_dir, 'checkpoints')}")
    print(f"  tensorboard  tensorboard --logdir {FLAGS.model_dir}")
    if FLAGS.mode != "eval":
        _plots(FLAGS.model_dir)
    if report:
        print(f"  metrics      {report['metrics_path']}")
    if FLAGS.mode == "train_and_eval" and FLAGS.export:
        return 0 if _export(FLAGS.model_dir, (trainer.train_data, trainer.val_data)) else 2
    return 0


if __name__ == "__main__":
    app.run(main)
