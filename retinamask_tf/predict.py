"""Predictors and what is done with them: ``load`` (the one way to get a predictor, for
any format), drawn images and a COCO-style results JSON (``main.py --mode=predict``).

Every predictor takes one uint8 RGB image ``[H, W, 3]`` (grayscale and RGBA are converted;
anything else is a ValueError) and returns ``detections.Detections`` in its own pixels.
"""

import os

import tensorflow as tf

from retinamask_tf.coco_results import ResultsFile, to_coco_results
from retinamask_tf.detections import rgb_uint8
from retinamask_tf.detector import CheckpointPredictor
from retinamask_tf.export.litert_runner import LiteRTPredictor
from retinamask_tf.export.openvino_runner import OpenVINOPredictor
from retinamask_tf.export.outputs import detections_from_outputs
from retinamask_tf.export.saved_model import resolve_servable
from retinamask_tf.image_io import READ_ERRORS, read_rgb
from retinamask_tf.run_dir import CONFIG_FILE, RunDirError, read_label_map
from retinamask_tf.visualize import draw


def load(path, include_masks=None, overrides=(), num_threads=None):
    """A predictor for ``path``, whatever it holds:

    - a training run directory (``config.yaml`` + ``checkpoints/``; also one written by
      ``--mode=import_weights``): its latest checkpoint, the Keras model itself;
    - an exported SavedModel folder, or its TF Serving base folder (the highest version);
    - a ``.tflite`` file written by the export (LiteRT; ``num_threads``, default 2);
    - an OpenVINO IR ``.xml`` written by ``--openvino`` (OpenVINO Runtime on the CPU,
      float32; ``num_threads``, default all cores).

    ``include_masks``: run directories only; None keeps the mask branch when the run has
    one, False detects only. ``overrides``: ``key=value`` inference settings of a run
    directory (``postprocess.*``, ``model.mask_head.mask_threshold`` / ``num_masks``);
    an export has its settings built in (re-export with ``--override`` to change them).
    Raises ``RunDirError`` (or ``ConfigError``) naming what is wrong.
    """
    path = os.fspath(path)
    if path.endswith((".tflite", ".xml")) or os.path.isfile(path):
        _export_only(path, include_masks, overrides)
        if not path.endswith((".tflite", ".xml")):
            raise RunDirError(f"{path} is a file but not a .tflite or OpenVINO .xml model: "
                              "give a run directory, a SavedModel folder, a .tflite file or "
                              "an OpenVINO .xml")
        if not os.path.exists(path):
            raise RunDirError(f"{path}: no such file or folder")
        if path.endswith(".xml"):
            return OpenVINOPredictor(path, num_threads=num_threads)
        return LiteRTPredictor(path, num_threads=num_threads or 2)
    if os.path.exists(os.path.join(path, CONFIG_FILE)):
        return CheckpointPredictor.from_run_dir(path, include_masks, overrides)
    if not os.path.isdir(path):
        raise RunDirError(f"{path}: no such file or folder")
    _export_only(path, include_masks, overrides)
    return SavedModelPredictor(path)


def _export_only(path, include_masks, overrides):
    if overrides or include_masks is not None:
        raise RunDirError(f"{path} is an export: its settings and mask branch were fixed when it "
                          "was exported (include_masks and overrides apply to run directories; "
                          "re-export with --override / --include_masks)")


class SavedModelPredictor:
    """``serving_default`` of an exported SavedModel (or of the highest version under a TF
    Serving base folder); class names from its label map asset, masks when it was exported
    with ``--include_masks``."""

    def __init__(self, export_dir):
        try:
            export_dir = self.export_dir = resolve_servable(export_dir)
        except RunDirError as e:
            raise RunDirError(f"{e} (and no {CONFIG_FILE}: not a run directory either)") from e
        loaded = tf.saved_model.load(export_dir)
        self.serving = loaded.signatures["serving_default"]
        self.has_masks = "detection_masks" in self.serving.structured_outputs
        self.mask_threshold = float(loaded.mask_threshold()) if hasattr(
            loaded, "mask_threshold") else 0.5  # exports written before it was stored
        self.names = dict(zip(*read_label_map(os.path.join(export_dir, "assets"))))
        self.source = f"{export_dir} (SavedModel)"

    def __call__(self, image):
        image = rgb_uint8(image)
        out = {k: v.numpy()[0] for k, v in self.serving(images=tf.constant(image[None])).items()}
        return detections_from_outputs(out, self.names, image.shape[0], image.shape[1],
                                       self.mask_threshold)


def predict_files(predictor, paths, out_dir, score_threshold=0.3, progress=None):
    """Runs ``predictor`` on every image, writes ``out_dir/<name>.png`` drawings and
    ``out_dir/results.json`` (COCO results, ``image_id`` = position in ``paths`` + 1, with
    ``file_name``). An image that cannot be read or run is reported (``failed``) and
    skipped; the others are still written.

    Returns:
      dict: results_json, drawn (paths), failed ([(path, reason)]), num_detections.
    """
    os.makedirs(out_dir, exist_ok=True)
    results = ResultsFile(os.path.join(out_dir, "results.json"))  # written as they come
    drawn, failed = [], []
    used = set()
    for i, path in enumerate(paths):
        try:
            image = read_rgb(path)  # as displayed (EXIF orientation applied)
        except READ_ERRORS as e:
            failed.append((path, f"unreadable image ({type(e).__name__}: {e})"))
            continue
        try:
            det = predictor(image)
        except (tf.errors.OpError, ValueError) as e:
            failed.append((path, f"the model could not run on it ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:300]})"))
            continue
        results.add(to_coco_results(i + 1, det.boxes, det.scores, det.classes, det.masks,
                                    file_name=path))
        stem = os.path.splitext(os.path.basename(path))[0]
        name = stem if stem not in used else f"{stem}_{i + 1}"
        used.add(name)
        out = os.path.join(out_dir, name + ".png")
        draw(image, det, score_threshold).save(out)
        drawn.append(out)
        if progress:
            progress.update(i + 1)
    results.close()
    return {"results_json": results.path, "drawn": drawn, "failed": failed,
            "num_detections": results.count}
