"""The TFLite post-processing (batch 1, class-offset NMS) equals the batched one."""

import numpy as np

from retinamask_tf.ops import postprocess


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
        kwargs = dict(pre_nms_top_k=200, max_detections=50, nms_iou_threshold=0.5,
                      score_threshold=0.05 if trial % 2 else 0.3)
        a = postprocess.generate_detections(logits, deltas, anchors, counts, shape, **kwargs)
        b = postprocess.generate_detections_single(logits, deltas, anchors, counts, shape, **kwargs)
        assert int(a["num_detections"][0]) == int(b["num_detections"][0]) > 0
        for key in ("boxes", "scores", "classes"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        assert b["boxes"].numpy()[..., 2].max() <= 90.0 and b["boxes"].numpy()[..., 3].max() <= 120.0
