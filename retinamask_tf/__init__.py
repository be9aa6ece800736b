"""retinamask_tf: RetinaMask (Fu, Shvets, Berg 2019) in TensorFlow 2 / Keras 3.

The Python API (see docs/python_api.md):

  load                a run directory, a SavedModel or a .tflite file -> a predictor:
                      predictor(image) -> Detections, whatever the format
  Detections          the result: boxes (yxyx, the image's pixels), scores, classes,
                      names, masks
  evaluate_predictor  COCO bbox AP of any predictor on a data split
  build_model         an ExperimentConfig -> the RetinaMask keras.Model (compile/fit ready)
  load_config         defaults <- YAML files <- key=value overrides
  load_data           an ExperimentConfig -> its (train, val) data sources
  build_dataset       a config's training or validation tf.data pipeline
  restore             a run directory -> its model, config and label map
  import_weights      a PyTorch checkpoint (released RetinaMask, torchvision) -> a run directory

Importing the package does not import TensorFlow; each name does, when first used.
"""

__version__ = "0.1.0"

_API = {
    "load": ("retinamask_tf.predict", "load"),
    "Detections": ("retinamask_tf.detections", "Detections"),
    "evaluate_predictor": ("retinamask_tf.evaluation.predictor_eval", "evaluate_predictor"),
    "build_model": ("retinamask_tf.modeling.factory", "build_model"),
    "load_config": ("retinamask_tf.config", "load_config"),
    "build_dataset": ("retinamask_tf.data.pipeline", "dataset_for"),
    "load_data": ("retinamask_tf.data.pipeline", "splits_for"),
    "restore": ("retinamask_tf.run_dir", "restore"),
    "import_weights": ("retinamask_tf.weights.importer", "import_weights"),
}
__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'retinamask_tf' has no attribute {name!r}")
    import importlib
    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
