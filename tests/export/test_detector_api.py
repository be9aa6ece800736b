"""The documented Python API: Detector.from_run_dir(model_dir)(image) on a NumPy image."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import retinamask_tf as rm
from retinamask_tf.image_io import read_rgb
from retinamask_tf.ops.resize import resize_and_pad


def test_detector_from_run_dir_matches_the_restored_model(trained_dir, coco128):
    """The detector's boxes and scores are the restored model's on the same resize, mapped
    to the image's own pixels, with the label map's ids and names; masks at image size."""
    model_dir, _ = trained_dir
    detector = rm.Detector.from_run_dir(model_dir)
    restored = rm.restore(model_dir)
    image = read_rgb(sorted(glob.glob(os.path.join(coco128[1], "*.jpg")))[0])
    det = detector(image)
    c = restored.config
    padded, info = resize_and_pad(tf.cast(image, tf.float32), c.data.short_side,
                                  c.data.long_side, c.image_size)
    want = restored.model.detect(padded[None], info[None])
    n = int(want["num_detections"][0])
    assert n == len(det["boxes"]) > 0
    np.testing.assert_allclose(det["boxes"], want["boxes"][0, :n].numpy(), atol=1e-4)
    np.testing.assert_allclose(det["scores"], want["scores"][0, :n].numpy(), atol=1e-6)
    classes = want["classes"][0, :n].numpy()
    assert list(det["category_ids"]) == [restored.class_ids[k] for k in classes]
    assert det["names"] == [restored.class_names[k] for k in classes]
    k = min(n, c.model.mask_head.num_masks)
    assert det["masks"].shape == (k,) + image.shape[:2] and det["masks"].dtype == bool
    assert (det["boxes"][:, 2] <= image.shape[0] + 1e-3).all()
    with pytest.raises(ValueError, match="RGB image"):
        detector(image[..., :2])
    boxes_only = rm.Detector.from_run_dir(model_dir, include_masks=False)
    assert boxes_only(image)["masks"] is None
    np.testing.assert_allclose(boxes_only(image)["boxes"], det["boxes"], atol=1e-4)
