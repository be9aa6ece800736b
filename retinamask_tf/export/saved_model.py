"""SavedModel export for TF Serving: preprocessing and post-processing inside the graph.

Signatures (TF Serving's names):
  serving_default      images: uint8 [batch, height, width, 3] RGB, any size (one size per
                       batch);
  serve_image_bytes    image_bytes: string [batch], encoded JPEG/PNG/BMP/GIF of any size
                       (grayscale and RGBA are converted to RGB), shown to the model as
                       displayed: the EXIF orientation in the bytes is applied, so boxes
                       are in the displayed frame, as in ``--mode=predict`` and LiteRT.
Outputs: detection_boxes [batch, D, 4] (ymin, xmin, ymax, xmax in pixels of the input
image), detection_scores [batch, D], detection_classes [batch, D] int32 (the dataset's own
category ids), num_detections [batch] int32; with ``include_masks`` also
detection_masks [batch, num_masks, m, m] float32 probabilities in the frame of each of
the first ``num_masks`` boxes. The label map is stored as the asset ``label_map.json``, the
run's ``model.mask_head.mask_threshold`` as the function ``mask_threshold()``.

The default export is detection-only: the model is rebuilt without the mask head and
only the detector's weights are restored, so the graph is RetinaNet's.

Input of the wrong rank or channel count (a single string instead of a batch, RGBA or
grayscale arrays) and empty images fail with a message saying what is expected.

``export_servable`` writes TF Serving's layout, ``<base>/<version>/saved_model.pb``
(version: the checkpoint's step unless given), atomically: a half-written version never
appears under the base path TF Serving watches.

The weights stay variables (the default): the SavedModel loads into TF Serving's C++
loader, ``saved_model_cli`` and ``tf.saved_model.load`` alike, at about the memory of
the weights plus the activations. ``freeze=True`` writes them into the graph as
constants instead (both signatures call one frozen function, so they are stored once).
Freezing buys little: ResNet-50-FPN on 2 cores ran 0.406 against 0.452 s at 512x512 and
1.79 against 1.84 s at 800x1344, at a peak RSS of 4.3 against 1.1 GB and 4.9 against
1.5 GB once loaded (``bench/compare_torchvision.py``, docs/results.md). A frozen SavedModel
has no variables: fine-tune from the training checkpoints.

``precision="bfloat16"`` builds the network under Keras' ``mixed_bfloat16`` policy: float32
variables (the same variables file), convolutions in bfloat16 except the box deltas', the
class logits cast to float32 before the sigmoid; preprocessing, decoding and NMS float32.
For CPUs with native bfloat16 (AVX512_BF16, AMX): 1.3-1.4x faster than float32 (with its
Winograd convs) for ResNet-50-FPN on 2 cores of an AMD EPYC with AVX512_BF16, slower on
the small demo model (docs/export.md).
"""

import os
import re
import shutil

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from retinamask_tf import run_dir
from retinamask_tf.data import parser
from retinamask_tf.ops import pixels, resize
from retinamask_tf.run_dir import LABEL_MAP_FILE, RunDirError


class ExportError(RunDirError):
    """The run cannot be exported; the message says what does not match."""


def restore_for_export(model_dir, include_masks=False, checkpoint=None, precision="float32",
                       overrides=()):
    """``run_dir.restore`` with its errors as ExportError. ``overrides``: ``key=value``
    inference settings (``run_dir.INFERENCE_CHANGES``: post-processing, mask threshold,
    ``model.conv_algorithm``, ...) the export is built with."""
    try:
        return run_dir.restore(model_dir, include_masks, checkpoint, tuple(overrides),
                               precision=precision)
    except RunDirError as e:
        raise ExportError(str(e)) from e


def _fail_unless(ok, message, tensor, placeholder):
    """``tensor()`` if ``ok``, else an InvalidArgumentError with ``message`` (a list of
    strings and tensors). A ``tf.cond``: the failing branch is the only way on, so no
    other op can fail first with a message of its own (with control dependencies alone,
    TF sometimes ran a later op first: the resize, or an ``EnsureShape``)."""
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, message)]):
            return tf.identity(placeholder)

    return tf.cond(ok, tensor, fail)


def _checked(tensor, rank, expected, channels=None):
    """``tensor`` [rank dims (last ``channels``), a batch of at least one], or an error with
    ``expected`` and the shape given."""
    shape = tf.shape(tensor)
    ok = tf.equal(tf.rank(tensor), rank) & tf.reduce_all(shape[:1] > 0)
    hint = []
    if channels is not None:  # (a scalar has no last dimension: its rank fails instead)
        ok &= tf.reduce_all(tf.equal(shape[-1:], channels))
        hint = ["(drop an alpha channel, convert grayscale to RGB, or send encoded bytes to "
                "serve_image_bytes)"]

    def checked():
        out = tf.identity(tensor)
        out.set_shape([None] * (rank - 1) + [channels])  # static only: no op that can fail
        return out

    placeholder = tf.zeros([0] * (rank - 1) + [channels or 0], tensor.dtype)
    return _fail_unless(ok, [f"{expected}; got shape", shape] + hint, checked, placeholder)


class _Untracked:
    """Holds a function out of sight of SavedModel's object tracking."""

    def __init__(self, fn):
        self.fn = fn


class ServingModule(tf.Module):
    """The model plus in-graph preprocessing/post-processing, with serving signatures.

    ``freeze``: run the network as a function with the weights as constants (see the
    module docstring); otherwise (the default) the module tracks the model's tf.Variables
    and saves each once.
    """

    def __init__(self, model, config, class_ids, include_masks=False, label_map_path=None,
                 freeze=False):
        super().__init__(name="retinamask_serving")
        self.include_masks = bool(include_masks)
        self.image_size = tuple(model.image_size)
        network = tf.function(self._network_fn(model))
        if freeze:
            concrete = network.get_concrete_function(*self._batch_spec())
            frozen = convert_variables_to_constants_v2(concrete)
            structure = concrete.structured_outputs
            self._network = _Untracked(
                lambda padded, info: tf.nest.pack_sequence_as(structure, frozen(padded, info)))
        else:
            # The tf.Variables under Keras's wrappers, tracked directly: otherwise the
            # graph TF Serving's C++ loader (and saved_model_cli, the TF1 loader) runs
            # reads variables that its restore op never wrote ("Could not find variable").
            # The Keras model itself is not tracked: its wrappers would save every weight
            # a second time under their own names (twice the variables file).
            self._tf_variables = [v.value for v in model.variables]
            self._network = _Untracked(network)
        self.short_side = int(config.data.short_side)
        self.long_side = int(config.data.long_side)
        self.pad_value = pixels.pad_pixel(config)
        self.class_ids = tf.constant(class_ids, tf.int32)
        # Read back by ``retinamask_tf.load`` to paste detection_masks as the run does (a
        # function, not a variable: a frozen export has none).
        threshold = float(config.model.mask_head.mask_threshold)
        self.mask_threshold = tf.function(lambda: tf.constant(threshold), input_signature=[])
        if label_map_path:
            self.label_map = tf.saved_model.Asset(label_map_path)

    def _preprocess(self, image):
        """[H, W, 3] (any dtype) -> (padded float32 [S, S, 3], image_info [4])."""
        shape = tf.shape(image)
        image = _fail_unless(shape[0] * shape[1] > 0,  # before the resize fails its own way
                             ["empty image: height and width must be > 0; got", shape[:2]],
                             lambda: image, tf.zeros([1, 1, 3], image.dtype))
        return resize.resize_and_pad(tf.cast(image, tf.float32), self.short_side,
                                     self.long_side, self.image_size, pad_value=self.pad_value)

    def _network_fn(self, model):
        include_masks = self.include_masks

        def network(padded, info):
            return model.detect(padded, info, with_masks=include_masks)

        return network

    def _batch_spec(self):
        return (tf.TensorSpec((None,) + self.image_size + (3,), tf.float32),
                tf.TensorSpec([None, 4], tf.float32))

    def _detect(self, padded, info):
        det = self._network.fn(padded, info)
        out = {"detection_boxes": det["boxes"], "detection_scores": det["scores"],
               "detection_classes": tf.gather(self.class_ids, det["classes"]),
               "num_detections": tf.cast(det["num_detections"], tf.int32)}
        if self.include_masks:
            out["detection_masks"] = det["masks"]
        return out

    def _spec(self):
        return (tf.TensorSpec(self.image_size + (3,), tf.float32), tf.TensorSpec([4], tf.float32))

    # The inputs take any shape, so that a wrong one gets a message saying what is expected
    # (a fixed signature shape would fail with a bare shape mismatch, or in TF Serving with
    # an error about its placeholder).
    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve_images(self, images):
        images = _checked(images, 4, "images must be uint8 [batch, height, width, 3] (RGB), "
                          "batch >= 1", channels=3)
        padded, info = tf.map_fn(self._preprocess, images, fn_output_signature=self._spec())
        return self._detect(padded, info)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")])
    def serve_image_bytes(self, image_bytes):
        image_bytes = _checked(image_bytes, 1, "image_bytes must be a batch [batch >= 1] of "
                               "encoded images (a list, also for one image)")

        def decode(data):
            return self._preprocess(parser.decode_displayed(data))  # EXIF orientation applied

        padded, info = tf.map_fn(decode, image_bytes, fn_output_signature=self._spec())
        return self._detect(padded, info)


def export_saved_model(model_dir, export_dir, include_masks=False, checkpoint=None,
                       freeze=False, precision="float32", overrides=()):
    """Writes a SavedModel with the signatures above; returns ``export_dir``. ``freeze``:
    weights as graph constants instead of variables; ``precision``: ``float32`` or
    ``bfloat16`` compute (see the module docstring); ``overrides``: inference settings
    (``restore_for_export``)."""
    run = restore_for_export(model_dir, include_masks, checkpoint, precision, overrides)
    module = ServingModule(run.model, run.config, run.class_ids, include_masks,
                           os.path.join(model_dir, LABEL_MAP_FILE), freeze=freeze)
    signatures = {"serving_default": module.serve_images.get_concrete_function(),
                  "serve_image_bytes": module.serve_image_bytes.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def checkpoint_step(model_dir, checkpoint=None):
    """The step of ``checkpoint`` (default: the latest in ``model_dir/checkpoints``)."""
    checkpoint = checkpoint or run_dir.latest_checkpoint(model_dir)
    if not checkpoint:
        raise ExportError(f"no checkpoint in {run_dir.checkpoint_dir(model_dir)}")
    try:
        return run_dir.checkpoint_step(checkpoint)
    except RunDirError as e:
        raise ExportError(str(e)) from e


def export_servable(model_dir, base_dir, version=None, include_masks=False, checkpoint=None,
                    freeze=False, precision="float32", overrides=()):
    """``export_saved_model`` into TF Serving's layout: ``base_dir/<version>/`` (version:
    the checkpoint's step unless given), written beside it and moved into place, replacing
    an earlier export of the same version. Returns the version's folder."""
    version = int(checkpoint_step(model_dir, checkpoint) if version is None else version)
    if version < 0:
        raise ExportError(f"--export_version must be >= 0, got {version}")
    final = os.path.join(base_dir, str(version))
    partial = os.path.join(base_dir, f".partial-{version}-{os.getpid()}")
    os.makedirs(base_dir, exist_ok=True)
    for name in os.listdir(base_dir):  # left by an export that was killed
        match = re.fullmatch(r"\.partial-\d+-(\d+)", name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)
    try:
        export_saved_model(model_dir, partial, include_masks, checkpoint, freeze, precision,
                           overrides)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def resolve_servable(path):
    """A SavedModel folder, or a TF Serving base folder (its highest numbered version)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [int(n) for n in (os.listdir(path) if os.path.isdir(path) else []) if n.isdigit()
                and os.path.exists(os.path.join(path, n, "saved_model.pb"))]
    if not versions:
        raise ExportError(f"{path} holds no SavedModel (saved_model.pb) and no numbered "
                          "version folder with one")
    return os.path.join(path, str(max(versions)))
