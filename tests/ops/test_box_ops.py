import numpy as np
import pytest

from retinamask_tf.ops import box_ops


def test_pairwise_iou_golden():
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    iou = box_ops.pairwise_iou(a, b).numpy()
    expected = np.array([[25 / 175, 1.0, 0.0],
                         [0.0, 25 / 100, 0.0]], np.float32)
    np.testing.assert_allclose(iou, expected, atol=1e-6)


def test_pairwise_iou_validity_mask_and_degenerate():
    a = np.array([[[0, 0, 10, 10]]], np.float32)
    b = np.array([[[0, 0, 10, 10], [3, 3, 3, 3]]], np.float32)  # second: zero area
    iou = box_ops.pairwise_iou(a, b, valid2=np.array([[False, True]])).numpy()
    np.testing.assert_allclose(iou, [[[-1.0, 0.0]]])


def test_clip_and_conversions():
    boxes = np.array([[-5, 3, 20, 40]], np.float32)
    np.testing.assert_allclose(box_ops.clip_boxes(boxes, 10, 30).numpy(), [[0, 3, 10, 30]])
    yxyx = np.array([[4, 3, 24, 13]], np.float32)
    cs = box_ops.yxyx_to_center_size(yxyx).numpy()
    np.testing.assert_allclose(cs, [[14, 8, 20, 10]])
    np.testing.assert_allclose(box_ops.center_size_to_yxyx(cs).numpy(), yxyx)
    assert box_ops.area(yxyx).numpy()[0] == pytest.approx(200.0)


def test_pairwise_ioa():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 20, 10]], np.float32)
    np.testing.assert_allclose(box_ops.pairwise_ioa(a, b).numpy(), [[0.5]])
