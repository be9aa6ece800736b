"""OpenVINO IR export: the whole detector, resize to NMS, for OpenVINO Runtime and
OpenVINO Model Server (which serves it behind TF Serving's REST/gRPC API).

The graph is the SavedModel's ``serving_default`` at batch 1: input ``images`` uint8
[1, height, width, 3] RGB of any size (resized and padded in the graph), outputs
``detection_boxes`` [1, D, 4] (ymin, xmin, ymax, xmax in pixels of the input image),
``detection_scores`` [1, D], ``detection_classes`` [1, D] int32 (the dataset's category
ids), ``num_detections`` [1] int32. OpenVINO has no conversion for TF's
``CombinedNonMaxSuppression``, so post-processing is the TFLite graph's
(``RetinaMask.single_image_detections``: one ``NonMaxSuppressionV5`` over class-offset
boxes, the same detections). Detection only; convolutions direct (OpenVINO
picks its own algorithms).

The weights are written as float32: ``openvino.save_model`` compresses them to float16 by
default, which moved every layer's output by about 1e-3 of its scale. Compute precision
is a runtime choice (``INFERENCE_PRECISION_HINT``: OpenVINO computes in bfloat16 by
default on CPUs with AMX), not a property of the file.

``openvino`` is an optional dependency (``pip install -e '.[openvino]'``).
"""

import json
import os
import shutil

import tensorflow as tf

from retinamask_tf import run_dir
from retinamask_tf.export.freeze import frozen_concrete_function
from retinamask_tf.export.openvino_runner import openvino_module
from retinamask_tf.export.saved_model import ExportError, restore_for_export
from retinamask_tf.ops import pixels, resize

IR_FILE = "model.xml"
INFO_FILE = "openvino_model.json"


class OpenVINODetector(tf.Module):
    """The detector with in-graph resize and OpenVINO-convertible post-processing, batch 1
    (see the module docstring for the signature)."""

    def __init__(self, model, config, class_ids):
        super().__init__(name="retinamask_openvino")
        self.model = model
        self.short_side = int(config.data.short_side)
        self.long_side = int(config.data.long_side)
        self.pad_value = pixels.pad_pixel(config)
        self.class_ids = tf.constant(class_ids, tf.int32)
        self.detect = tf.function(self._detect, input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.uint8, name="images")])

    def _detect(self, images):
        model = self.model
        padded, info = resize.resize_and_pad(tf.cast(images[0], tf.float32), self.short_side,
                                             self.long_side, model.image_size,
                                             pad_value=self.pad_value)
        outputs = model(padded[None], training=False)
        det = model.single_image_detections(outputs, model.valid_shape(info[None]))
        return {"detection_boxes": det["boxes"] / tf.tile(info[2:], [2]),
                "detection_scores": det["scores"],
                "detection_classes": tf.gather(self.class_ids, det["classes"]),
                "num_detections": det["num_detections"]}


def convert(detector):
    """``openvino.Model`` of ``detector.detect``, the variables frozen into constants."""
    return openvino_module().convert_model(frozen_concrete_function(detector.detect))


def export_openvino(model_dir, output_dir, checkpoint=None, overrides=()):
    """Writes ``output_dir/model.xml`` (+ ``model.bin``), ``label_map.json`` and
    ``openvino_model.json`` for the run's latest checkpoint; returns the .xml path.
    ``overrides``: inference settings (``saved_model.restore_for_export``)."""
    ov = openvino_module()
    run = restore_for_export(model_dir, False, checkpoint,
                             overrides=tuple(overrides) + ("model.conv_algorithm=direct",))
    model = convert(OpenVINODetector(run.model, run.config, run.class_ids))
    partial = output_dir.rstrip("/") + f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        ov.save_model(model, os.path.join(partial, IR_FILE), compress_to_fp16=False)
        run_dir.write_label_map(partial, run.class_ids, run.class_names)
        with open(os.path.join(partial, INFO_FILE), "w") as f:
            json.dump({"image_size": list(run.model.image_size),
                       "max_detections": run.config.postprocess.max_detections,
                       "inputs": ["images"], "batch": 1}, f, indent=1)
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(partial, output_dir)
    except Exception as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, (ImportError, ExportError)):
            raise
        raise ExportError(f"{model_dir}: OpenVINO export failed: {e}") from e
    return os.path.join(output_dir, IR_FILE)
