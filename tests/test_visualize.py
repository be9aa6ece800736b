import numpy as np

from retinamask_tf.visualize import color_of, draw_detections


def _label_colour(drawn, box):
    """The colour of the label background just above ``box``'s top-left corner."""
    y0, x0 = int(box[0]), int(box[1])
    return tuple(int(v) for v in np.asarray(drawn)[y0 - 3, x0 + 1])


def test_the_most_confident_detection_is_drawn_on_top():
    image = np.zeros((64, 64, 3), np.uint8)
    box = [20.0, 10.0, 50.0, 40.0]
    boxes, classes = [box, box], [1, 2]
    assert color_of(1) != color_of(2)
    # Sorted by descending score, as detectors return them: the confident one first.
    drawn = draw_detections(image, boxes, classes, [0.9, 0.35], ["a", "b"])
    assert _label_colour(drawn, box) == tuple(color_of(1))
    # The same detections in the other order draw the same picture.
    again = draw_detections(image, boxes[::-1], classes[::-1], [0.35, 0.9], ["b", "a"])
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(again))


def test_detections_below_the_threshold_and_ground_truth():
    image = np.zeros((64, 64, 3), np.uint8)
    box = [20.0, 10.0, 50.0, 40.0]
    below = draw_detections(image, [box], [1], [0.2], ["a"], score_threshold=0.3)
    assert not np.asarray(below).any()
    gt = draw_detections(image, [box], [1], None, ["a"])
    assert _label_colour(gt, box) == tuple(color_of(1))
