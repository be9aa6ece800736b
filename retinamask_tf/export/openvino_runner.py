"""Runs an exported OpenVINO IR detector with OpenVINO Runtime (``openvino``).

Needs NumPy and openvino only (no TensorFlow). The folder written by
``export.openvino_ir.export_openvino`` holds ``model.xml`` / ``model.bin``,
``label_map.json`` and ``openvino_model.json``.
"""

import os

import numpy as np

from retinamask_tf.detections import rgb_uint8
from retinamask_tf.export.outputs import detections_from_outputs
from retinamask_tf.run_dir import read_label_map

PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}


def openvino_module():
    """``openvino``, or an ImportError saying how to get it."""
    try:
        import openvino
    except ImportError as e:
        raise ImportError("the OpenVINO export and runner need openvino: "
                          "pip install -e '.[openvino]'") from e
    return openvino


def compile_settings(num_threads=None, precision="float32"):
    """OpenVINO's CPU compile properties for ``precision`` (``float32`` or ``bfloat16``
    compute) and ``num_threads`` inference threads (None: OpenVINO's default, all cores)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    settings = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
    if num_threads:
        settings["INFERENCE_NUM_THREADS"] = int(num_threads)
    return settings


class OpenVINOPredictor:
    """One exported IR, compiled for the CPU: calling it on a uint8 RGB image of any size
    returns ``detections.Detections`` in the image's own pixels (detection only).

    Args:
      model_path: the ``model.xml`` written by ``export_openvino``.
      num_threads: inference threads (OpenVINO's default: all cores).
      precision: ``float32`` or ``bfloat16`` compute (OpenVINO's own default on a CPU
        with AMX is bfloat16; ours is float32, the exported weights' precision).
    """

    def __init__(self, model_path, num_threads=None, precision="float32"):
        ov = openvino_module()
        settings = compile_settings(num_threads, precision)
        folder = os.path.dirname(os.path.abspath(model_path))
        self.names = dict(zip(*read_label_map(folder)))
        self.model_path = model_path
        self.source = f"{model_path} (OpenVINO IR, {precision})"
        self.compiled = ov.Core().compile_model(model_path, "CPU", settings)
        self.has_masks = False

    def __call__(self, image):
        image = rgb_uint8(image)
        result = self.compiled(np.ascontiguousarray(image[None]))
        out = {port.get_any_name(): value[0] for port, value in result.items()}
        return detections_from_outputs(out, self.names, image.shape[0], image.shape[1])
