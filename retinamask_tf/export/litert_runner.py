"""Runs an exported TFLite detector with the LiteRT interpreter (``ai-edge-litert``).

Needs NumPy and ai-edge-litert only (no TensorFlow): what a deployment runs. The model
folder written by ``export.tflite.export_tflite`` holds ``tflite_model.json`` (input size
and letterbox settings) and ``label_map.json`` beside the ``.tflite`` files.
"""

import json
import os

import numpy as np

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


def op_names(model_path):
    """The set of operator names in a .tflite file (builtin names; custom ops by name)."""
    interpreter = interpreter_class()(model_path=model_path)
    return {op["op_name"] for op in interpreter._get_ops_details()}


class LiteRTDetector:
    """One exported .tflite model, ready to run on RGB images of any size.

    Args:
      model_path: a ``model_<variant>.tflite`` written by ``export_tflite``.
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
        with drop_known_native_noise():
            self.interpreter = interpreter_class()(model_path=model_path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
            self.runner(images=np.zeros((1,) + tuple(self.info["image_size"]) + (3,), np.uint8),
                        true_image_shape=np.ones((1, 2), np.float32))  # allocates (and warms)
        self.image_size = tuple(self.info["image_size"])

    def preprocess(self, image):
        """RGB-convertible [H, W(, C)] array -> (padded uint8 [S, S, 3], true shape [2],
        scale [2]). Grayscale is repeated to RGB; an alpha channel is dropped."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an image [H, W] or [H, W, 1|3|4], got {image.shape}")
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        image = image[..., :3]
        if image.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {image.dtype}")
        return resize.letterbox(image, self.info["short_side"], self.info["long_side"],
                                self.image_size, pad_value=self.info.get("pad_value"))

    def run_letterboxed(self, padded, true_image_shape):
        """Raw model outputs for one letterboxed image (boxes in the model-input frame)."""
        out = self.runner(images=np.asarray(padded, np.uint8)[None],
                          true_image_shape=np.asarray(true_image_shape, np.float32)[None])
        return {k: v[0] for k, v in out.items()}

    def detect(self, image):
        """Detections of one image.

        Args:
          image: [H, W, 3] uint8 RGB (grayscale / RGBA are converted).
        Returns:
          dict: boxes [n, 4] yxyx pixels of ``image``, scores [n], classes [n] int (dataset
          category ids), names (list of n class names).
        """
        height, width = np.asarray(image).shape[:2]
        padded, shape, scale = self.preprocess(image)
        out = self.run_letterboxed(padded, shape)
        n = int(out["num_detections"])
        boxes = out["detection_boxes"][:n] / np.tile(scale, 2)[None]
        boxes = np.clip(boxes, 0, [height, width, height, width]).astype(np.float32)
        classes = out["detection_classes"][:n].astype(np.int64)
        return {"boxes": boxes, "scores": out["detection_scores"][:n].astype(np.float32),
                "classes": classes, "names": [self.names.get(int(c), str(c)) for c in classes]}
