"""TFLite export of the detection-only model: builtin ops only, NMS inside, fixed input size.

The model (signature ``serving_default``) takes
  images            uint8 [1, S_h, S_w, 3]: RGB, resized and padded to the config's static
                    size by ``ops.resize.letterbox`` (bottom/right zero padding);
  true_image_shape  float32 [1, 2]: (height, width) of the resized image inside ``images``
                    (boxes are clipped to it, as in training and the SavedModel);
and returns
  detection_boxes   float32 [1, D, 4] yxyx in pixels of ``images`` (divide by the
                    letterbox scale for the original image);
  detection_scores  float32 [1, D]; detection_classes int32 [1, D] (dataset category ids);
  num_detections    int32 [1]; rows past it are zero.
Normalisation, the network, box decoding and per-class NMS (``nms.class_offset_nms``,
TFLite's builtin NON_MAX_SUPPRESSION_V5) are all inside: no Flex and no custom ops.

and, in the mask files (``model_<variant>_masks.tflite``, ``include_masks``), also
  detection_masks   float32 [1, M, m, m]: mask probabilities of the first M =
                    ``model.mask_head.num_masks`` detections (rows past num_detections are
                    meaningless), each in the frame of its box (``mask_paste`` puts them
                    into the image); RoIAlign there is ``ops.crop.gather_crop_and_resize``
                    (gathers: TFLite has no CropAndResize), the same values as training's.

Variants: ``float32``; ``float16`` (float16 weights); ``dynamic_int8`` (int8 weights,
float activations); ``int8`` (int8 weights and activations of the network and of the mask
head, per channel, calibrated on training images; post-processing and RoIAlign kept float).
"""

import json
import os
import warnings

import numpy as np
import tensorflow as tf

from retinamask_tf import run_dir
from retinamask_tf.data import pipeline
from retinamask_tf.export import litert_runner
from retinamask_tf.export.freeze import frozen_concrete_function
from retinamask_tf.ops import pixels, resize
from retinamask_tf.export.litert_runner import INFO_FILE
from retinamask_tf.export.saved_model import ExportError, restore_for_export
from retinamask_tf.image_io import read_rgb
from retinamask_tf.native_noise import drop_known_native_noise

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
SMALL_VARIANTS = ("float16", "dynamic_int8", "int8")  # converted with direct convs
POSTPROCESS_SCOPE = "postprocess"


class TFLiteDetector(tf.Module):
    """The model with TFLite-convertible pre/post-processing, batch 1: detection-only, or
    with ``detection_masks`` when ``model`` has its mask branch."""

    def __init__(self, model, class_ids):
        super().__init__(name="retinamask_tflite")
        self.model = model
        self.image_size = tuple(int(s) for s in model.image_size)
        # Name scopes the int8 variant keeps float: post-processing, and RoIAlign (its box
        # coordinates, level choice and interpolation weights; int8 there moves samples).
        self.float_scopes = (POSTPROCESS_SCOPE,) + (
            (model.mask_branch.roi_aligner.name,) if model.has_masks else ())
        self.class_ids = tf.constant(class_ids, tf.int32)
        self.detect = tf.function(self._detect, input_signature=[
            tf.TensorSpec((1,) + self.image_size + (3,), tf.uint8, name="images"),
            tf.TensorSpec([1, 2], tf.float32, name="true_image_shape")])

    def _detect(self, images, true_image_shape):
        model = self.model
        pyramid = model.features(tf.cast(images, tf.float32), training=False)
        outputs = model.head(pyramid, training=False)
        with tf.name_scope(POSTPROCESS_SCOPE):
            det = model.single_image_detections(outputs, true_image_shape)
            classes = tf.gather(self.class_ids, det["classes"])
        out = {"detection_boxes": det["boxes"], "detection_scores": det["scores"],
               "detection_classes": classes, "num_detections": det["num_detections"]}
        if model.has_masks:  # TFLite has no CropAndResize: RoIAlign in matrix products
            out["detection_masks"] = model.mask_branch.predict(
                pyramid, det["boxes"], det["classes"], roi_kernel="matmul")
        return out


def calibration_images(dataset, config, num_images, seed=0):
    """Representative-dataset generator for int8 calibration: ``num_images`` training
    images (a fixed random sample of a CocoDataset, or the first ones of a streamed
    source: TFRecords or TFDS), in the frame training sees them (their orientation, see
    ``image_io``), letterboxed exactly as at inference."""
    if dataset.records is None:  # streamed: TFRecords or TFDS
        def encoded():
            for ex in dataset.read_examples(1).take(num_images):
                yield ex["image_bytes"].numpy(), int(ex["orientation"].numpy())
    else:
        records = dataset.records
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(records), size=min(num_images, len(records)), replace=False)

        def encoded():
            for i in picks:
                yield records[i].path, records[i].orientation

    def generate():
        for source, orientation in encoded():
            image = read_rgb(source, orientation)
            padded, shape, _ = resize.letterbox(image, config.data.short_side,
                                                   config.data.long_side, config.image_size,
                                                   pixels.pad_pixel(config))
            yield {"images": padded[None], "true_image_shape": shape[None]}
    return generate


def convert(detector, variant, representative_dataset=None, float_model=None):
    """TFLite flatbuffer bytes of ``detector`` for one of ``VARIANTS`` (builtin ops only;
    the converter fails, naming the op, if something would need Flex or a custom op).
    ``float_model``: the float32 variant's bytes, if already converted (int8 reads its
    tensor names instead of converting it again)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; choose from {VARIANTS}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [frozen_concrete_function(detector.detect)], tf.Module())
    return _convert(converter, variant, representative_dataset, float_model,
                    detector.float_scopes)


def _convert(converter, variant, representative_dataset, float_model=None,
             float_scopes=(POSTPROCESS_SCOPE,)):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative_dataset is None:
            raise ValueError("the int8 variant needs a representative dataset")
        return _convert_int8(converter, representative_dataset, float_model, float_scopes)
    return converter.convert()


# Op types only the post-processing uses (box decoding, top-k, NMS, gathers); kept float
# by type, because denylisting by tensor name misses ops whose TFLite names are fused
# ("a;b"), such as TopK: it then ran on int8 logits and the outputs were gathered in int8.
POSTPROCESS_OP_TYPES = ("TOPK_V2", "LOGISTIC", "GATHER", "GATHER_ND", "UNPACK", "PACK",
                        "STRIDED_SLICE", "EXP", "NON_MAX_SUPPRESSION_V5", "MINIMUM", "MAXIMUM")


def _in_scopes(tensor_name, scopes):
    """Whether any part of a (possibly fused, "a;b") TFLite tensor name lies under one of
    ``scopes`` (TF adds "_1", "_2" to a reused scope: "roi_aligner_1/...")."""
    for part in tensor_name.split(";"):
        top = part.split("/")[0]
        if "/" in part and any(top == s or (top.startswith(s + "_") and top[len(s) + 1:].isdigit())
                               for s in scopes):
            return True
    return False


def _convert_int8(converter, representative_dataset, float_model=None,
                  float_scopes=(POSTPROCESS_SCOPE,)):
    """Integer network, float post-processing.

    Left to itself the converter also quantizes box decoding, the class offsets of the
    NMS, the scores and the gathered outputs to int8, which destroys the boxes (IoU ~0
    with the float model; with the names of the post-processing ops alone denylisted, the
    output boxes still came out of an int8 gather in 1-pixel steps and the NMS boxes in
    3.7-pixel steps: demo bbox AP 0.464 against 0.546 in float). So TF's selective
    quantization (``QuantizationDebugger``) keeps float every op under ``float_scopes``
    (``TFLiteDetector.float_scopes``: post-processing, and RoIAlign in the mask files), the
    ops producing the signature's outputs, and every op of the ``POSTPROCESS_OP_TYPES``
    (the network has none of them; a test checks). The mask head's convolutions are int8.
    """
    float_model = float_model or converter.convert()
    interpreter = litert_runner.interpreter_class()(model_content=float_model)
    keep_float = [t["name"] for t in interpreter.get_tensor_details()
                  if _in_scopes(t["name"], float_scopes)]
    keep_float += [d["name"] for d in interpreter.get_output_details()]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=keep_float, denylisted_ops=list(POSTPROCESS_OP_TYPES))
    with warnings.catch_warnings():  # the debugger builds the deprecated tf.lite.Interpreter
        warnings.simplefilter("ignore", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def export_tflite(model_dir, output_dir, variants=VARIANTS, num_calibration_images=100,
                  checkpoint=None, progress=print, train_data=None, overrides=(),
                  include_masks=False):
    """Converts a training directory's latest checkpoint to each TFLite variant.

    ``train_data``: the run's training split, if the caller has it loaded (int8
    calibration reads it; otherwise it is loaded from the config). ``overrides``: inference
    settings (``saved_model.restore_for_export``; a ``model.conv_algorithm`` applies to the
    float32 variant: the ``SMALL_VARIANTS`` always convert direct convs; a
    ``model.mask_head.num_masks`` sets the mask files' M). ``include_masks``: also
    ``model_<variant>_masks.tflite``, the same detector with ``detection_masks``. Writes
    ``output_dir/model_<variant>.tflite``, ``label_map.json`` and ``tflite_model.json``
    (input size, letterbox settings, mask threshold, files and their sizes: what the runner
    needs). Returns {file key: path}, keys "<variant>" and "<variant>_masks".
    """
    variants = list(variants)
    for v in variants:
        if v not in VARIANTS:
            raise ExportError(f"unknown TFLite variant {v!r}; choose from {', '.join(VARIANTS)}")
    representative, config = None, None
    os.makedirs(output_dir, exist_ok=True)
    paths, sizes = {}, {}
    for masks in (False, True) if include_masks else (False,):
        run = restore_for_export(model_dir, masks, checkpoint, overrides=overrides)
        config, class_ids, class_names = run.config, run.class_ids, run.class_names
        detector = TFLiteDetector(run.model, class_ids)
        # The variants that exist to be small (float16, dynamic_int8, int8) are converted
        # from the direct-conv graph: their files keep the 3x3 kernels, not the 4x larger
        # Winograd-transformed ones the float32 file stores, and no quantization is applied
        # to transformed kernels or tiles (not evaluated).
        small_detector = detector
        if set(variants) & set(SMALL_VARIANTS) and config.model.conv_algorithm != "direct":
            small_detector = TFLiteDetector(
                restore_for_export(model_dir, masks, checkpoint, overrides=tuple(overrides)
                                   + ("model.conv_algorithm=direct",)).model, class_ids)
        if "int8" in variants and representative is None:
            train = (train_data if train_data is not None
                     else pipeline.load_splits(config.data, masks=False)[0])
            representative = calibration_images(train, config, num_calibration_images)
        float_model = None
        for v in variants:
            key = v + ("_masks" if masks else "")
            if progress:
                progress(f"converting TFLite {key} ...")
            source = small_detector if v in SMALL_VARIANTS else detector
            with drop_known_native_noise():  # int8 reuses the float32 file's names: same graph only
                data = convert(source, v, representative,
                               float_model if source is detector else None)
            if v == "float32":
                float_model = data
            path = os.path.join(output_dir, f"model_{key}.tflite")
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
            paths[key], sizes[key] = path, len(data)
    run_dir.write_label_map(output_dir, class_ids, class_names)
    pad = pixels.pad_pixel(config)
    info = {"image_size": list(detector.image_size), "short_side": config.data.short_side,
            "pad_value": list(pad) if pad else None,
            "long_side": config.data.long_side, "max_detections": config.postprocess.max_detections,
            "mask_threshold": config.model.mask_head.mask_threshold,
            "inputs": ["images", "true_image_shape"], "variants": sizes,
            "num_calibration_images": num_calibration_images if "int8" in variants else 0}
    with open(os.path.join(output_dir, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)
    return paths
