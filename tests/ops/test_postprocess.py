"""The TFLite post-processing (batch 1, class-offset NMS) equals the batched one."""

import numpy as np
import pytest

from retinamask_tf.config import BoxCoderConfig, PostprocessConfig
from retinamask_tf.ops import postprocess

CODER = BoxCoderConfig()


def test_single_image_postprocess_equals_batched():
    rng = np.random.default_rng(0)
    counts = [300, 80, 20]
    n, k = sum(counts), 5
    yx = rng.uniform(0, 100, (n, 2))
    anchors = np.concatenate([yx, yx + rng.uniform(5, 40, (n, 2))], 1).astype(np.float32)
    shape = np.array([[90.0, 120.0]], np.float32)  # boxes are clipped to it
    for trial in range(4):
        logits = rng.normal(-2, 2, (1, n, k)).astype(np.float32)
        deltas = rng.normal(0, 0.3, (1, n, 4)).astype(np.float32)
        settings = PostprocessConfig(pre_nms_top_k=200, max_detections=50, nms_iou_threshold=0.5,
                                     score_threshold=0.05 if trial % 2 else 0.3)
        a = postprocess.generate_detections(logits, deltas, anchors, counts, shape, settings, CODER)
        b = postprocess.generate_detections_single(logits, deltas, anchors, counts, shape,
                                                   settings, CODER)
        assert int(a["num_detections"][0]) == int(b["num_detections"][0]) > 0
        for key in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        assert b["boxes"].numpy()[..., 2].max() <= 90.0 and b["boxes"].numpy()[..., 3].max() <= 120.0


def _outside_candidates():
    """Anchors of which a third lie wholly below the valid image (rows 100..140 of a
    90-row image): clipped, their boxes are empty."""
    rng = np.random.default_rng(1)
    counts = [60]
    n, k = 60, 3
    yx = rng.uniform(0, 60, (n, 2))
    yx[::3, 0] = rng.uniform(100, 110, n // 3)
    anchors = np.concatenate([yx, yx + rng.uniform(10, 30, (n, 2))], 1).astype(np.float32)
    logits = rng.normal(-2, 1, (1, n, k)).astype(np.float32)
    logits[0, ::3] += 3.0  # the outside anchors score highest
    deltas = np.zeros((1, n, 4), np.float32)
    shape = np.array([[90.0, 120.0]], np.float32)
    return logits, deltas, anchors, counts, shape


def test_empty_boxes_are_dropped_in_both_paths():
    """A candidate whose clipped box is empty is never a detection (module docstring); the
    batched and the TFLite-op paths agree, with a score threshold of 0."""
    logits, deltas, anchors, counts, shape = _outside_candidates()
    settings = PostprocessConfig(pre_nms_top_k=1000, max_detections=100, nms_iou_threshold=0.5,
                                 score_threshold=0.0)
    a = postprocess.generate_detections(logits, deltas, anchors, counts, shape, settings, CODER)
    b = postprocess.generate_detections_single(logits, deltas, anchors, counts, shape, settings,
                                               CODER)
    num = int(a["num_detections"][0])
    assert num == int(b["num_detections"][0])
    boxes = a["boxes"].numpy()[0, :num]
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    assert a["scores"].numpy()[0, :num].min() > 0
    assert 0 < num <= 40 * 3  # the 20 outside anchors x 3 classes are gone
    for key in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_tflite_nms_returns_no_duplicates_with_empty_boxes(tmp_path):
    """Converted to TFLite, the single-image post-processing returns each candidate once.
    (Before empty boxes were dropped, TFLite's NMS returned one empty box in every slot
    after the first time it selected it.)"""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    import tensorflow as tf

    logits, deltas, anchors, counts, shape = _outside_candidates()

    @tf.function(input_signature=[tf.TensorSpec(logits.shape, tf.float32),
                                  tf.TensorSpec(deltas.shape, tf.float32)])
    def detect(cls_logits, box_deltas):
        return postprocess.generate_detections_single(
            cls_logits, box_deltas, tf.constant(anchors), counts, tf.constant(shape),
            PostprocessConfig(score_threshold=0.0, nms_iou_threshold=0.5), CODER)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [detect.get_concrete_function()], detect)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = litert.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = logits if detail["shape"][-1] == logits.shape[-1] else deltas
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    outputs = interpreter.get_output_details()
    boxes = [interpreter.get_tensor(d["index"]) for d in outputs if len(d["shape"]) == 3]
    classes = [interpreter.get_tensor(d["index"]) for d in outputs
               if len(d["shape"]) == 2 and d["dtype"] == np.int32]
    assert len(boxes) == 1 and len(classes) == 1
    ref = detect(logits, deltas)
    num = int(ref["num_detections"][0])
    got = boxes[0][0, :num]
    np.testing.assert_allclose(got, ref["boxes"].numpy()[0, :num], atol=1e-4)
    np.testing.assert_array_equal(classes[0][0, :num], ref["classes"].numpy()[0, :num])
    # No (class, box) twice (a class's boxes all differ here: zero deltas, distinct anchors).
    assert len({(c, *np.round(b, 3)) for c, b in zip(classes[0][0, :num], got)}) == num
