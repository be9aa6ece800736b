import math

import numpy as np

from retinamask_tf.ops import anchors


def test_counts_and_order_on_a_tiny_image():
    boxes, counts = anchors.generate_anchors((128, 128), 3, 7, 3, (0.5, 1.0, 2.0), 4.0)
    assert counts == [16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9, 2 * 2 * 9, 1 * 9]
    assert boxes.shape == (sum(counts), 4)
    b = boxes.numpy()
    # First anchor: P3, cell (0, 0), scale 2^0, ratio h/w = 0.5 -> h = 32/sqrt2, w = 32*sqrt2.
    h, w = 32 / math.sqrt(2), 32 * math.sqrt(2)
    np.testing.assert_allclose(b[0], [4 - h / 2, 4 - w / 2, 4 + h / 2, 4 + w / 2], rtol=1e-6)
    # Anchor 4 of a cell: scale index 1 (2^(1/3)), ratio 1.0.
    s = 32 * 2 ** (1 / 3)
    np.testing.assert_allclose(b[4], [4 - s / 2, 4 - s / 2, 4 + s / 2, 4 + s / 2], rtol=1e-6)
    # Second cell of P3 is x = 1 (row-major): centre (4, 12).
    np.testing.assert_allclose(b[9], [4 - h / 2, 12 - w / 2, 4 + h / 2, 12 + w / 2], rtol=1e-6)
    # Last anchor: P7 (stride 128), single cell centre (64, 64), scale 2^(2/3), ratio 2.
    s = 512 * 2 ** (2 / 3)
    h, w = s * math.sqrt(2), s / math.sqrt(2)
    np.testing.assert_allclose(b[-1], [64 - h / 2, 64 - w / 2, 64 + h / 2, 64 + w / 2], rtol=1e-6)


def test_anchor_areas_per_level():
    boxes, counts = anchors.generate_anchors((256, 384), 3, 7, 3, (0.5, 1.0, 2.0), 4.0)
    b = boxes.numpy()
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    start = 0
    for level, count in zip(range(3, 8), counts):
        expected = [(4 * 2 ** level * 2 ** (s / 3)) ** 2 for s in range(3) for _ in range(3)]
        np.testing.assert_allclose(areas[start:start + 9], expected, rtol=1e-5)
        start += count
    assert counts[0] == 32 * 48 * 9 and counts[-1] == 2 * 3 * 9
