"""Keras layer wrapping ``ops.roi_align.multilevel_roi_align``."""

import keras

from retinamask_tf.ops import roi_align


@keras.saving.register_keras_serializable(package="retinamask_tf")
class RoIAligner(keras.layers.Layer):
    """``{"P3": ..., "P5": ...}``, boxes [B, R, 4] yxyx input pixels ->
    [B, R, output_size, output_size, C], each box read from its FPN level.
    ``kernel`` in a call: how the samples are read, one of ``ops.roi_align.ROI_ALIGN_KERNELS``
    (the same values): TF's ``crop_and_resize`` (with ``training=True``, an image gradient
    that is exact on CPU), ``gather`` (XLA compiles it) or ``matmul`` (no gathers: LiteRT).
    ``box_plus_one``: sample the box with its bottom/right edge 1 px inside (the released
    code's "+1" boxes); the level still comes from the box's true size."""

    def __init__(self, output_size=14, sampling_ratio=2, aligned=False, min_level=3, max_level=5,
                 canonical_level=4, canonical_size=224.0, box_plus_one=False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # boxes and scores stay float32 under mixed precision
        super().__init__(**kwargs)
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.canonical_level = int(canonical_level)
        self.canonical_size = float(canonical_size)
        self.box_plus_one = bool(box_plus_one)

    def call(self, features, boxes, kernel="crop_and_resize", training=False):
        return roi_align.multilevel_roi_align(
            features, boxes, self.output_size, self.sampling_ratio, self.aligned, self.min_level,
            self.max_level, self.canonical_level, self.canonical_size, kernel,
            bool(training), self.box_plus_one)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, sampling_ratio=self.sampling_ratio,
                      aligned=self.aligned, min_level=self.min_level, max_level=self.max_level,
                      canonical_level=self.canonical_level, canonical_size=self.canonical_size,
                      box_plus_one=self.box_plus_one)
        return config
