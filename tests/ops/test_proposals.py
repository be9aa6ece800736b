import numpy as np
import tensorflow as tf

from retinamask_tf.ops import proposals


def test_training_rois_golden():
    det = np.array([[[0, 0, 10, 10], [0, 0, 10, 19], [50, 50, 60, 60], [0, 0, 10, 10]]], np.float32)
    gt = np.array([[[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 0, 0]]], np.float32)
    rois, positive, matched = proposals.training_rois(
        det, tf.constant([3]), gt, tf.constant([[True, True, False]]),
        tf.constant([[True, False, False]]), 0.5)
    # GT rows first, then detections; the 4th detection is padding (num_detections 3).
    np.testing.assert_allclose(rois.numpy()[0, :3], gt[0])
    # GT0 (mask) yes; GT1 (no mask) no; padded GT row no; det0 IoU 1 with GT0 yes; det1 IoU
    # 100/190 = 0.526 yes; det2 matches GT1 without a mask: not trained; det3 padding: no.
    assert positive.numpy()[0].tolist() == [True, False, False, True, True, False, False]
    assert matched.numpy()[0].tolist() == [0, 0, 0, 0, 0, 0, 0]


def test_positives_first_keeps_order_and_counts_drops():
    rois = tf.reshape(tf.range(6 * 4, dtype=tf.float32), [1, 6, 4])
    positive = tf.constant([[False, True, False, True, True, False]])
    matched = tf.constant([[0, 1, 0, 2, 3, 0]])
    r, p, m, dropped = proposals.positives_first(rois, positive, matched, 2)
    assert p.numpy().tolist() == [[True, True]]
    assert m.numpy().tolist() == [[1, 2]]
    np.testing.assert_allclose(r.numpy()[0, :, 0], [4.0, 12.0])
    assert dropped.numpy().tolist() == [1]
    _, p, _, dropped = proposals.positives_first(rois, positive, matched, 4)
    assert p.numpy().tolist() == [[True, True, True, False]] and dropped.numpy().tolist() == [0]


def test_trim_to_positives_cuts_to_the_batch_largest_count():
    rois = tf.reshape(tf.range(2 * 5 * 4, dtype=tf.float32), [2, 5, 4])
    positive = tf.constant([[False, True, False, True, True], [True, False, False, False, False]])
    matched = tf.constant([[0, 1, 0, 2, 3], [4, 0, 0, 0, 0]])
    r, p, m = proposals.trim_to_positives(rois, positive, matched)
    assert p.numpy().tolist() == [[True, True, True], [True, False, False]]
    assert m.numpy().tolist() == [[1, 2, 3], [4, 0, 0]]
    np.testing.assert_allclose(r.numpy()[:, :, 0], [[4.0, 12.0, 16.0], [20.0, 24.0, 28.0]])
    none = tf.zeros([2, 5], tf.bool)
    r, p, m = proposals.trim_to_positives(rois, none, matched)  # one slot, no loss
    assert r.shape == (2, 1, 4) and not p.numpy().any()
