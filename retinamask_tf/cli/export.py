"""--mode=export (and the end of train_and_eval): SavedModel in TF Serving's layout, TFLite
variants, and TFLite detections drawn on a few val images."""

import os
import sys

from retinamask_tf import run_dir
from retinamask_tf.data import pipeline
from retinamask_tf.export.litert_runner import LiteRTPredictor
from retinamask_tf.export.openvino_ir import export_openvino
from retinamask_tf.export.saved_model import export_servable
from retinamask_tf.export.tflite import export_tflite
from retinamask_tf.image_io import read_rgb
from retinamask_tf.visualize import draw


def run(model_dir, export_dir=None, include_masks=False, version=None, freeze=False,
        precision="float32", tflite_variants=("float32", "float16", "dynamic_int8", "int8"),
        datasets=None, overrides=(), openvino=False):
    """Exports the run's latest checkpoint; prints where everything went. ``datasets``: the
    run's (train, val) splits if already loaded (int8 calibration and the drawings read
    them), else those of its config (+ ``overrides``, e.g. data paths for an imported
    model): int8 calibrates on the training images (the val ones without), and is skipped
    with a note when the config names neither. ``overrides`` also set the exports'
    inference settings (``run_dir.INFERENCE_CHANGES``: post-processing, mask threshold and
    count, ``model.conv_algorithm``). ``include_masks``: also ``saved_model_masks/`` and
    ``tflite/model_<variant>_masks.tflite``, the same detector with the mask branch.
    ``openvino``: also ``openvino/model.xml``, an OpenVINO IR of the detector.
    Returns 0, or 2 after printing why the run cannot be exported."""
    root = export_dir or os.path.join(model_dir, "export")
    try:
        for masks in (False, True) if include_masks else (False,):
            base = os.path.join(root, "saved_model" + ("_masks" if masks else ""))
            version_dir = export_servable(model_dir, base, version, masks, freeze=freeze,
                                          precision=precision, overrides=overrides)
            kind = "bfloat16 compute; " if precision == "bfloat16" else ""
            outputs = "; detection_masks too" if masks else ""
            print(f"  SavedModel   {version_dir} ({kind}signatures serving_default, "
                  f"serve_image_bytes{outputs}; inspect: saved_model_cli show --dir "
                  f"{version_dir} --all)\n"
                  f"  TF Serving   --model_base_path={os.path.abspath(base)} (serves its "
                  "highest version)", flush=True)
        if tflite_variants:
            train, val = datasets or _splits(model_dir, run_dir.read_config(model_dir, overrides).data)
            variants = list(tflite_variants)
            if "int8" in variants and train is None and val is None:
                variants.remove("int8")
                print("  TFLite       int8 skipped: its calibration needs images and the config "
                      "names none (--override data.val_json=... data.val_images=...)")
            paths = export_tflite(model_dir, os.path.join(root, "tflite"), variants,
                                  progress=None, train_data=train if train is not None else val,
                                  overrides=overrides, include_masks=include_masks)
            for path in paths.values():
                print(f"  TFLite       {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
            if val is not None and variants:
                draw_examples(os.path.join(root, "drawn"), val, paths[variants[0]])
        if openvino:
            path = export_openvino(model_dir, os.path.join(root, "openvino"),
                                   overrides=overrides)
            print(f"  OpenVINO     {path} (batch 1, float32 weights; serve with OpenVINO "
                  "Model Server, or rm.load)")
    except (run_dir.RunDirError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _splits(model_dir, data_config):
    """(train, val) of the config; either None when the config names no such split (an
    imported model's COCO config before its data paths are given)."""
    if not pipeline.names_training_data(data_config):
        if not data_config.val_json:
            return None, None
        return None, pipeline.load_val(data_config,
                                       run_dir.categories(*run_dir.read_label_map(model_dir)))
    return pipeline.load_splits(data_config, masks=False)


def draw_examples(out_dir, val, tflite_path, num_images=4):
    """Runs the TFLite model on the first val images, draws them into ``out_dir``, prints
    where they went and the command that does the same for any image."""
    predictor = LiteRTPredictor(tflite_path)
    os.makedirs(out_dir, exist_ok=True)
    for record in val.records[:num_images]:
        image = read_rgb(record.path, record.orientation)  # the annotations' frame
        draw(image, predictor(image)).save(
            os.path.join(out_dir, f"{record.image_id}.png"))
    print(f"  drawn        {out_dir}/ ({min(num_images, len(val.records))} val images, "
          "TFLite detections >= 0.3)")
    if val.records:
        print(f"  try          python tflite/run.py --model={tflite_path} "
              f"--image={val.records[0].path} --output_dir={out_dir}")
