import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf.ops import nms


def _iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(boxes, scores, classes, max_det, iou_thr, score_thr):
    """Greedy per-class NMS in plain Python."""
    kept = []
    for c in np.unique(classes):
        idx = [i for i in np.argsort(-scores, kind="stable") if classes[i] == c and scores[i] > score_thr]
        chosen = []
        for i in idx:
            if all(_iou(boxes[i], boxes[j]) <= iou_thr for j in chosen):
                chosen.append(i)
        kept.extend(chosen)
    kept.sort(key=lambda i: -scores[i])
    return kept[:max_det]


def test_golden_small_case():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.04]], np.float32)
    classes = np.array([[0, 0, 1, 0]], np.int32)
    out = nms.per_class_nms(boxes, scores, classes, num_classes=2, max_detections=5,
                            iou_threshold=0.4, score_threshold=0.05)
    assert out["num_detections"].numpy()[0] == 2  # box 1 suppressed, box 3 below threshold
    np.testing.assert_allclose(out["scores"].numpy()[0], [0.9, 0.7, 0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy()[0][:2], [0, 1])
    np.testing.assert_allclose(out["boxes"].numpy()[0][:2], [[0, 0, 10, 10], [0, 0, 10, 10]])
    assert (out["boxes"].numpy()[0][2:] == 0).all()


def test_matches_reference_on_random_boxes():
    rng = np.random.default_rng(1)
    for trial in range(3):
        n = 300
        yx = rng.uniform(0, 200, (n, 2))
        hw = rng.uniform(5, 60, (n, 2))
        boxes = np.concatenate([yx, yx + hw], 1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, 4, n).astype(np.int32)
        out = nms.per_class_nms(boxes[None], scores[None], classes[None], 4, 50, 0.4, 0.05)
        ref = _reference(boxes, scores, classes, 50, 0.4, 0.05)
        num = out["num_detections"].numpy()[0]
        assert num == len(ref)
        np.testing.assert_allclose(out["scores"].numpy()[0][:num], scores[ref], rtol=1e-6)
        np.testing.assert_allclose(out["boxes"].numpy()[0][:num], boxes[ref], rtol=1e-5)
        np.testing.assert_array_equal(out["classes"].numpy()[0][:num], classes[ref])


def test_class_offset_nms_golden_small_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.04], np.float32)
    classes = np.array([0, 0, 1, 0], np.int32)
    out = nms.class_offset_nms(boxes, scores, classes, max_detections=5, iou_threshold=0.4,
                               score_threshold=0.05)
    # Box 1 suppressed by box 0 (IoU 0.68); box 2 kept (other class, though identical to box 0).
    assert int(out["num_detections"]) == 2
    np.testing.assert_allclose(out["scores"].numpy(), [0.9, 0.7, 0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), [0, 1, 0, 0, 0])
    np.testing.assert_allclose(out["boxes"].numpy()[:2], [[0, 0, 10, 10], [0, 0, 10, 10]])
    assert (out["boxes"].numpy()[2:] == 0).all()


def test_class_offset_nms_equals_per_class_nms():
    """The TFLite NMS keeps exactly what per-class NMS keeps (80 classes, touching boxes,
    boxes at the image border where the class offsets meet)."""
    rng = np.random.default_rng(7)
    for trial in range(4):
        n = 400
        yx = rng.uniform(0, 250, (n, 2))
        hw = rng.uniform(2, 120, (n, 2))
        boxes = np.clip(np.concatenate([yx, yx + hw], 1), 0, 256).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        classes = rng.integers(0, 80 if trial % 2 else 3, n).astype(np.int32)
        ref = _reference(boxes, scores, classes, 100, 0.5, 0.05)
        out = nms.class_offset_nms(boxes, scores, classes, 100, 0.5, 0.05)
        num = int(out["num_detections"])
        assert num == len(ref)
        np.testing.assert_array_equal(out["scores"].numpy()[:num], scores[ref])
        np.testing.assert_array_equal(out["boxes"].numpy()[:num], boxes[ref])
        np.testing.assert_array_equal(out["classes"].numpy()[:num], classes[ref])
        batched = nms.per_class_nms(boxes[None], scores[None], classes[None], 80, 100, 0.5, 0.05)
        np.testing.assert_array_equal(batched["boxes"].numpy()[0], out["boxes"].numpy())


def _rows(out, b):
    n = int(out["num_detections"][b])
    return sorted(zip(-out["scores"].numpy()[b, :n], out["classes"].numpy()[b, :n],
                      map(tuple, out["boxes"].numpy()[b, :n])))


_padded_xla = tf.function(nms.padded_per_class_nms, jit_compile=True, reduce_retracing=False)


@pytest.mark.parametrize("n,num_classes,max_det,block,low_scores", [
    (600, 80, 100, 256, False),  # three blocks, stops once 100 are kept
    (600, 3, 100, 64, False),  # few classes: much suppression, many blocks
    (37, 2, 100, 256, False),  # fewer candidates than detection slots
    (900, 5, 50, 128, True),  # few candidates above the score threshold
])
def test_padded_nms_equals_combined_nms_under_xla(n, num_classes, max_det, block, low_scores):
    """The XLA-compilable NMS keeps exactly what combined_non_max_suppression keeps (and the
    plain-Python greedy reference), compiled with jit_compile, on a batch of two. Equal
    scores may come out in another order (combined NMS's own order among ties is neither
    index nor class order), so rows are compared sorted by (score, class, box)."""
    rng = np.random.default_rng(n + num_classes)
    yx = rng.uniform(0, 300, (2, n, 2))
    hw = rng.uniform(2, 120, (2, n, 2))
    boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    boxes[:, :5, 2:] = boxes[:, :5, :2]  # empty boxes: never suppress nor get suppressed
    scores = rng.uniform(0, 1, (2, n)).astype(np.float32)
    if low_scores:
        scores *= 0.07
    scores[:, 10:14] = scores[:, 10:11]  # exact ties
    classes = rng.integers(0, num_classes, (2, n)).astype(np.int32)
    want = nms.per_class_nms(boxes, scores, classes, num_classes, max_det, 0.4, 0.05)
    got = _padded_xla(tf.constant(boxes), tf.constant(scores), tf.constant(classes), max_det,
                      0.4, 0.05, block)
    np.testing.assert_array_equal(got["num_detections"].numpy(), want["num_detections"].numpy())
    np.testing.assert_array_equal(got["scores"].numpy(), want["scores"].numpy())
    for b in range(2):
        assert _rows(got, b) == _rows(want, b)
        ref = _reference(boxes[b], scores[b], classes[b], max_det, 0.4, 0.05)
        num = int(got["num_detections"][b])
        assert num == len(ref)
        np.testing.assert_array_equal(got["scores"].numpy()[b, :num], scores[b, ref])
