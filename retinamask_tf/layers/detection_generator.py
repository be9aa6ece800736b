"""Keras layer wrapping ``ops.postprocess.generate_detections``."""

import keras

from retinamask_tf.ops import box_coder, postprocess


@keras.saving.register_keras_serializable(package="retinamask_tf")
class DetectionGenerator(keras.layers.Layer):
    """Raw outputs -> padded per-class-NMS detections (model-input pixels, yxyx).

    Call with ``(cls_logits [B, N, K], box_deltas [B, N, 4], anchors [N, 4],
    image_shape [B, 2], level_counts=list, max_detections=None, padded_nms=False)``;
    returns the dict of ``postprocess.generate_detections``. ``max_detections`` overrides
    the layer's for one call (the mask branch's training RoIs); ``padded_nms`` selects the
    XLA-compilable NMS (``nms.padded_per_class_nms``, same result) for a call inside a
    ``jit_compile`` function.
    """

    def __init__(self, score_threshold=0.05, pre_nms_top_k=1000, nms_iou_threshold=0.4,
                 max_detections=100, coder_weights=(10.0, 10.0, 5.0, 5.0),
                 scale_clip=box_coder.DEFAULT_SCALE_CLIP, keep_empty_boxes=False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # boxes and scores stay float32 under mixed precision
        super().__init__(**kwargs)
        self.score_threshold = float(score_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)
        self.coder_weights = tuple(float(w) for w in coder_weights)
        self.scale_clip = float(scale_clip)
        self.keep_empty_boxes = bool(keep_empty_boxes)

    def call(self, cls_logits, box_deltas, anchors, image_shape, level_counts=(),
             max_detections=None, padded_nms=False):
        return postprocess.generate_detections(
            cls_logits, box_deltas, anchors, level_counts, image_shape,
            score_threshold=self.score_threshold, pre_nms_top_k=self.pre_nms_top_k,
            nms_iou_threshold=self.nms_iou_threshold,
            max_detections=int(self.max_detections if max_detections is None else max_detections),
            coder_weights=self.coder_weights, scale_clip=self.scale_clip, padded_nms=padded_nms,
            keep_empty_boxes=self.keep_empty_boxes)

    def get_config(self):
        config = super().get_config()
        config.update(score_threshold=self.score_threshold, pre_nms_top_k=self.pre_nms_top_k,
                      nms_iou_threshold=self.nms_iou_threshold,
                      max_detections=self.max_detections, coder_weights=list(self.coder_weights),
                      scale_clip=self.scale_clip, keep_empty_boxes=self.keep_empty_boxes)
        return config
