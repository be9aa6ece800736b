"""Keras layer wrapping ``ops.postprocess.generate_detections``."""

import keras

from retinamask_tf import config as config_lib
from retinamask_tf.ops import postprocess


@keras.saving.register_keras_serializable(package="retinamask_tf")
class DetectionGenerator(keras.layers.Layer):
    """Raw outputs -> padded per-class-NMS detections (model-input pixels, yxyx).

    Built from the post-processing settings (``config.PostprocessConfig``) and the box
    coder's (``config.BoxCoderConfig``), each kept whole as ``settings`` / ``coder``. Call
    with ``(cls_logits [B, N, K], box_deltas [B, N, 4], anchors [N, 4], image_shape [B, 2],
    level_counts=list, max_detections=None, padded_nms=False)``; returns the dict of
    ``postprocess.generate_detections``. ``max_detections`` overrides the settings' for one
    call (the mask branch's training RoIs); ``padded_nms`` selects the XLA-compilable NMS
    (``nms.padded_per_class_nms``, same result) for a call inside a ``jit_compile`` function.
    """

    def __init__(self, settings=None, coder=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # boxes and scores stay float32 under mixed precision
        super().__init__(**kwargs)
        self.settings = settings if settings is not None else config_lib.PostprocessConfig()
        self.coder = coder if coder is not None else config_lib.BoxCoderConfig()

    def call(self, cls_logits, box_deltas, anchors, image_shape, level_counts=(),
             max_detections=None, padded_nms=False):
        return postprocess.generate_detections(
            cls_logits, box_deltas, anchors, level_counts, image_shape, self.settings,
            self.coder, max_detections=max_detections, padded_nms=padded_nms)

    def get_config(self):
        config = super().get_config()
        config.update(settings=config_lib.to_dict(self.settings),
                      coder=config_lib.to_dict(self.coder))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["settings"] = config_lib.PostprocessConfig(**config.get("settings", {}))
        config["coder"] = config_lib.BoxCoderConfig(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in config.get("coder", {}).items()})
        return cls(**config)
