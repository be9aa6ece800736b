import math

import numpy as np
import tensorflow as tf

from retinamask_tf.losses.mask import mask_loss_sum


def test_bce_on_the_target_class_channel_by_hand():
    logits = np.zeros((2, 1, 2, 3), np.float32)
    logits[0, 0, 0, 2] = 2.0   # class 2 channel of RoI 0, pixel (0, 0)
    logits[0, 0, 1, 0] = 50.0  # other class: must not count
    targets = np.array([[[1.0, 0.0]], [[1.0, 1.0]]], np.float32)
    got = float(mask_loss_sum(logits, tf.constant([2, 0]), targets, tf.constant([True, False])))
    want = math.log(1 + math.exp(-2.0)) + math.log(2.0)  # BCE(2, 1) + BCE(0, 0)
    assert abs(got - want) < 1e-5


def test_no_positives_gives_zero_even_with_infinite_logits():
    logits = np.full((1, 2, 2, 1), np.inf, np.float32)
    got = mask_loss_sum(logits, tf.constant([0]), np.zeros((1, 2, 2), np.float32),
                        tf.constant([False]))
    assert float(got) == 0.0
