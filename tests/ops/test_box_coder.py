import math

import numpy as np

from retinamask_tf.config import BoxCoderConfig
from retinamask_tf.ops import box_coder

CODER = BoxCoderConfig()  # the released code's weights (10, 10, 5, 5), clip log(1000/16)


def test_encode_golden():
    anchor = np.array([[0, 0, 10, 10]], np.float32)
    box = np.array([[1, 2, 11, 14]], np.float32)  # centre (6, 8), h 10, w 12
    d = box_coder.encode(box, anchor, CODER.weights).numpy()
    np.testing.assert_allclose(d, [[1.0, 3.0, 0.0, 5 * math.log(1.2)]], rtol=1e-6)
    d1 = box_coder.encode(box, anchor, weights=(1, 1, 1, 1)).numpy()
    np.testing.assert_allclose(d1, [[0.1, 0.3, 0.0, math.log(1.2)]], rtol=1e-6)


def test_round_trip_random():
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 500, (200, 2))
    hw = rng.uniform(2, 300, (200, 2))
    boxes = np.concatenate([yx, yx + hw], 1).astype(np.float32)
    ayx = rng.uniform(0, 500, (200, 2))
    ahw = rng.uniform(8, 300, (200, 2))
    anchors = np.concatenate([ayx, ayx + ahw], 1).astype(np.float32)
    for weights in [(10, 10, 5, 5), (1, 1, 1, 1)]:
        back = box_coder.decode(box_coder.encode(boxes, anchors, weights), anchors, weights,
                                CODER.scale_clip).numpy()
        np.testing.assert_allclose(back, boxes, atol=2e-3)


def test_decode_clips_scale():
    anchor = np.array([[0, 0, 16, 16]], np.float32)
    big = box_coder.decode(np.array([[0, 0, 100.0, 100.0]], np.float32), anchor, CODER.weights,
                           CODER.scale_clip).numpy()
    # exp(log(1000/16)) * 16 = 1000 px, centred on the anchor centre (8, 8).
    np.testing.assert_allclose(big, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-5)
