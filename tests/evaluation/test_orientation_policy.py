"""Dataset images reach the LiteRT evaluation and the int8 calibration in the frame their
annotations use (the orientation the start-up check decided), as training sees them."""

import os

import numpy as np

from retinamask_tf import config as C
from retinamask_tf import image_io
from retinamask_tf.data import coco, pipeline
from retinamask_tf.detections import Detections
from retinamask_tf.evaluation.predictor_eval import evaluate_predictor
from retinamask_tf.ops import resize
from retinamask_tf.export.tflite import calibration_images

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                        "fixtures", "bad_images")
# exif_rotated.jpg: stored 32x24 with orientation 6, the JSON gives the displayed 24x32;
# exif_same_size.jpg: orientation 3 with the stored size in the JSON (used as stored).
NAMES = ("exif_rotated.jpg", "exif_same_size.jpg", "ok.jpg")


def _dataset():
    ds = coco.load_coco(os.path.join(FIXTURES, "annotations.json"), FIXTURES)
    keep = [r for r in ds.records if os.path.basename(r.path) in NAMES]
    return pipeline.verify_images(type(ds)(**{**ds.__dict__, "records": keep}), "full", None)


class _Recorder:
    """A detector that records the images it is given and finds nothing."""

    def __init__(self):
        self.images = []

    def __call__(self, image):
        self.images.append(image)
        return Detections.build(np.zeros((0, 4)), [], [], [])


def test_litert_evaluation_and_calibration_use_the_annotation_frame():
    ds = _dataset()
    by_name = {os.path.basename(r.path): r for r in ds.records}
    assert by_name["exif_rotated.jpg"].orientation == 6
    assert by_name["exif_same_size.jpg"].orientation == 1
    expected = {os.path.basename(r.path): image_io.read_rgb(r.path, r.orientation)
                for r in ds.records}
    for name in NAMES:  # every image in its JSON's frame: 24 x 32
        assert expected[name].shape == (24, 32, 3), name
    # The rotated file really is rotated by that: its displayed view is what training sees.
    np.testing.assert_array_equal(expected["exif_rotated.jpg"],
                                  image_io.read_rgb(by_name["exif_rotated.jpg"].path))

    recorder = _Recorder()
    evaluate_predictor(recorder, ds, progress=False)
    for record, image in zip(ds.records, recorder.images):
        np.testing.assert_array_equal(image, expected[os.path.basename(record.path)])

    config = C.load_config([], ["data.short_side=128", "data.long_side=128"])
    batches = list(calibration_images(ds, config, num_images=len(ds.records))())
    got = sorted(b["images"][0].tobytes() for b in batches)
    want = sorted(resize.letterbox(image, 128, 128, config.image_size)[0].tobytes()
                  for image in expected.values())
    assert got == want
