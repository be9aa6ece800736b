"""TFLite files with masks (``model_<variant>_masks.tflite``): builtin ops only, the same
detections as the detection-only file, the SavedModel's mask probabilities in float32, and
in int8 an integer mask head with RoIAlign kept float."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

pytest.importorskip("ai_edge_litert", reason="the TFLite tests need ai-edge-litert")

from retinamask_tf import run_dir  # noqa: E402
from retinamask_tf.export import litert_runner, saved_model  # noqa: E402

FORBIDDEN = ("CUSTOM", "DELEGATE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "FLEX")


@pytest.fixture(scope="module")
def exported_masks(trained_dir, mask_tflite, tmp_path_factory):
    model_dir, _ = trained_dir
    out = tmp_path_factory.mktemp("masks")
    sm = saved_model.export_saved_model(model_dir, str(out / "saved_model_masks"),
                                        include_masks=True)
    return mask_tflite, tf.saved_model.load(sm).signatures["serving_default"], model_dir


def _ops(path):
    """[(op name, [output tensor details])] of a TFLite file, without delegation."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], [tensors[i] for i in op["outputs"] if i >= 0])
            for op in interpreter._get_ops_details()]


def test_mask_files_are_builtin_with_a_masks_output(exported_masks):
    paths, _, model_dir = exported_masks
    num_masks = run_dir.read_config(model_dir).model.mask_head.num_masks
    assert set(paths) == {"float32", "int8", "float32_masks", "int8_masks"}
    for key, path in paths.items():
        names = {op for op, _ in _ops(path)}
        assert not any(f in op for op in names for f in FORBIDDEN), (key, names)
        runner = litert_runner.LiteRTPredictor(path)
        outputs = runner.runner.get_output_details()
        assert runner.has_masks == key.endswith("_masks")
        if runner.has_masks:
            masks = outputs["detection_masks"]
            assert list(masks["shape"]) == [1, num_masks, 28, 28], key
            assert masks["dtype"] == np.float32, key
        else:
            assert "detection_masks" not in outputs


def _image(coco128, index):
    _, images = coco128
    return np.asarray(Image.open(os.path.join(images, sorted(os.listdir(images))[index]))
                      .convert("RGB"))


def test_float32_masks_are_the_saved_models_and_detections_unchanged(exported_masks, coco128):
    """On 3 coco128 images: the mask file's detections are the detection-only file's, bit
    for bit (the same network and post-processing), and its mask probabilities are the mask
    SavedModel's (crop_and_resize there, gathers here) within 1e-4 for every detection whose
    box matches within 0.01 px (measured: 2e-5 on all 50)."""
    paths, serving, _ = exported_masks
    with_masks = litert_runner.LiteRTPredictor(paths["float32_masks"])
    plain = litert_runner.LiteRTPredictor(paths["float32"])
    for index in range(3):
        padded, shape, _ = with_masks.preprocess(_image(coco128, index))
        out = with_masks.run_letterboxed(padded, shape)
        ref_plain = plain.run_letterboxed(padded, shape)
        for k, v in ref_plain.items():
            np.testing.assert_array_equal(out[k], v, err_msg=k)
        h, w = (int(v) for v in shape)
        ref = {k: v.numpy()[0]
               for k, v in serving(images=tf.constant(padded[None, :h, :w])).items()}
        m = out["detection_masks"].shape[0]
        same = (np.abs(out["detection_boxes"][:m] - ref["detection_boxes"][:m]).max(1) < 0.01) & (
            out["detection_classes"][:m] == ref["detection_classes"][:m])
        assert same.mean() >= 0.9, same.mean()
        err = np.abs(out["detection_masks"][same] - ref["detection_masks"][same]).max()
        assert err <= 1e-4, err


def test_int8_mask_head_is_integer_and_roi_align_float(exported_masks):
    """The int8 mask file runs the mask head's convolutions (and transposed convolution) in
    int8, while RoIAlign's coordinates, level choice and interpolation stay float (in int8
    they moved the samples, and the level's log2 was quantized)."""
    paths, _, _ = exported_masks
    ops = _ops(paths["int8_masks"])
    after_nms = ops[[i for i, (op, _) in enumerate(ops) if op.startswith("NON_MAX")][0]:]
    convs = [outs[0]["dtype"] for op, outs in after_nms if op in ("CONV_2D", "TRANSPOSE_CONV")]
    assert convs and all(d == np.int8 for d in convs), convs
    math = [(op, outs[0]["dtype"]) for op, outs in after_nms
            if op in ("LOG", "SQRT", "FLOOR", "CEIL", "MUL", "SUB", "GATHER", "AVERAGE_POOL_2D")
            and outs[0]["dtype"] not in (np.float32, np.int32)]
    # select_class's gather of the int8 mask logits is the one integer gather allowed.
    assert [m for m in math if m != ("GATHER", np.int8)] == [], math
