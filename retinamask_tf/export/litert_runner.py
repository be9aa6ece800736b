"""Runs an exported TFLite detector with the LiteRT interpreter (``ai-edge-litert``).

Needs NumPy and ai-edge-litert only (no TensorFlow): what a deployment runs. The model
folder written by ``export.tflite.export_tflite`` holds ``tflite_model.json`` (input size
and letterbox settings) and ``label_map.json`` beside the ``.tflite`` files.
"""

import json
import os

import numpy as np

from retinamask_tf.detections import rgb_uint8
from retinamask_tf.export.outputs import detections_from_outputs
from retinamask_tf.ops import resize
from retinamask_tf.run_dir import read_label_map
from retinamask_tf.native_noise import drop_known_native_noise

INFO_FILE = "tflite_model.json"


def interpreter_class():
    """``ai_edge_litert.interpreter.Interpreter``, or an ImportError saying how to get it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ImportError("the TFLite runner needs ai-edge-litert: "
                          "pip install ai-edge-litert") from e
    return Interpreter


class LiteRTPredictor:
    """One exported .tflite model, ready to run on RGB images of any size: calling it on a
    uint8 RGB image returns ``detections.Detections`` (with full-image masks from a
    ``model_<variant>_masks.tflite`` file, None from a detection-only one).

    Args:
      model_path: a ``model_<variant>[_masks].tflite`` written by ``export_tflite``.
      num_threads: interpreter threads (XNNPACK).
    """

    def __init__(self, model_path, num_threads=2):
        folder = os.path.dirname(os.path.abspath(model_path))
        info_path = os.path.join(folder, INFO_FILE)
        if not os.path.exists(info_path):
            raise FileNotFoundError(f"{info_path} not found: {model_path} must sit in the "
                                    "folder written by the TFLite export")
        with open(info_path) as f:
            self.info = json.load(f)
        self.names = dict(zip(*read_label_map(folder)))
        self.model_path = model_path
        self.source = f"{model_path} (TFLite, LiteRT)"
        with drop_known_native_noise():
            self.interpreter = interpreter_class()(model_path=model_path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
            self.has_masks = "detection_masks" in self.runner.get_output_details()
            self.runner(images=np.zeros((1,) + tuple(self.info["image_size"]) + (3,), np.uint8),
                        true_image_shape=np.ones((1, 2), np.float32))  # allocates (and warms)
        self.image_size = tuple(self.info["image_size"])
        self.mask_threshold = float(self.info.get("mask_threshold", 0.5))

    def preprocess(self, image):
        """uint8 RGB image (``detections.rgb_uint8``) -> (padded uint8 [S, S, 3], true shape
        [2], scale [2])."""
        image = rgb_uint8(image)
        return resize.letterbox(image, self.info["short_side"], self.info["long_side"],
                                self.image_size, pad_value=self.info.get("pad_value"))

    def run_letterboxed(self, padded, true_image_shape):
        """Raw model outputs for one letterboxed image (boxes in the model-input frame)."""
        out = self.runner(images=np.asarray(padded, np.uint8)[None],
                          true_image_shape=np.asarray(true_image_shape, np.float32)[None])
        return {k: v[0] for k, v in out.items()}

    def __call__(self, image):
        """Detections of one uint8 RGB image [H, W, 3] (grayscale / RGBA are converted), in
        its own pixels."""
        image = rgb_uint8(image)
        height, width = image.shape[:2]
        padded, shape, scale = self.preprocess(image)
        out = self.run_letterboxed(padded, shape)
        return detections_from_outputs(out, self.names, height, width, self.mask_threshold,
                                       box_scale=scale)
