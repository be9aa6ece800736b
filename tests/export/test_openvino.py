"""The OpenVINO IR export and runner (skipped without the ``openvino`` extra)."""

import glob
import os

import numpy as np
import pytest

pytest.importorskip("openvino")

import retinamask_tf as rm  # noqa: E402
from retinamask_tf.cli import export  # noqa: E402
from retinamask_tf.export import openvino_ir  # noqa: E402
from retinamask_tf.image_io import read_rgb  # noqa: E402
from retinamask_tf.run_dir import RunDirError  # noqa: E402
from tests.export.matching import matched  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    """``--mode=export --openvino --tflite_variants=`` of the fixture run: its SavedModel
    base folder and its IR."""
    root = str(tmp_path_factory.mktemp("openvino_export"))
    assert export.run(trained_dir[0], root, tflite_variants=(), openvino=True) == 0
    return os.path.join(root, "saved_model"), os.path.join(root, "openvino", openvino_ir.IR_FILE)


def test_same_detections_as_the_saved_model(exported, coco128):
    """Images of three sizes: the IR's detections are the SavedModel's (top 20 matched by
    class and box: boxes within 0.05 px, scores within 1e-5), names included; its weights
    are float32 (OpenVINO's default float16 compression moved outputs by ~1e-3)."""
    base, xml = exported
    assert 'element_type="f16"' not in open(xml).read()
    served, ir = rm.load(base), rm.load(xml, num_threads=1)
    assert "OpenVINO" in ir.source
    paths = sorted(glob.glob(os.path.join(coco128[1], "*.jpg")))[:3]
    images = [read_rgb(p) for p in paths] + [read_rgb(paths[0])[:97, :211]]
    for image in images:
        a, b = served(image), ir(image)
        assert len(a) == len(b) == 100  # the fixture's score threshold is 0
        box_err, score_err = matched(a, b, 20, box_tol=0.05, score_tol=1e-5)
        assert box_err <= 0.05 and score_err <= 1e-5, (image.shape, box_err, score_err)
        assert (b.boxes >= 0).all() and (b.boxes[:, 2] <= image.shape[0] + 1e-3).all()
        assert [served.names[int(c)] for c in b.classes] == list(b.names)
        assert b.masks is None and b.boxes.dtype == np.float32


def test_load_refuses_settings_and_bad_precision(exported):
    _, xml = exported
    with pytest.raises(RunDirError, match="is an export"):
        rm.load(xml, overrides=["postprocess.score_threshold=0.5"])
    from retinamask_tf.export.openvino_runner import OpenVINOPredictor
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVINOPredictor(xml, precision="float16")
