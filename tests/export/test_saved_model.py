"""SavedModel export: signatures, parity with the Keras model in a fresh process, bad input."""

import base64
import collections
import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from retinamask_tf import image_io
from retinamask_tf.ops import resize
from retinamask_tf.export import saved_model
from tests.export.matching import matched

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LOAD_AND_RUN = """
import sys, json, numpy as np, tensorflow as tf
from PIL import Image
loaded = tf.saved_model.load(sys.argv[1])
out = {}
for i, path in enumerate(sys.argv[3:]):
    image = np.asarray(Image.open(path).convert("RGB"))
    res = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    data = open(path, "rb").read()
    res2 = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([data]))
    for k, v in res.items():
        out[f"{i}/{k}"] = v.numpy()
        out[f"{i}/bytes/{k}"] = res2[k].numpy()
np.savez(sys.argv[2], **out)
"""


def _keras_reference(model, config, image):
    padded, info = resize.resize_and_pad(tf.constant(image, tf.float32), config.data.short_side,
                                         config.data.long_side, model.image_size)
    det = tf.function(model.detect)(padded[None], info[None], with_masks=False)
    return {k: v.numpy()[0] for k, v in det.items()}


def _sorted(boxes, scores):
    order = sorted(range(len(scores)), key=lambda i: (-round(float(scores[i]), 5),
                                                      *np.round(boxes[i], 2)))
    return boxes[order], scores[order]


def test_export_loads_in_a_fresh_process_and_matches_keras(trained_dir, coco128, tmp_path):
    model_dir, trainer = trained_dir
    export_dir = str(tmp_path / "sm")
    saved_model.export_saved_model(model_dir, export_dir)
    assert json.load(open(os.path.join(export_dir, "assets", "label_map.json")))[0]["id"] == 1
    cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show",
                          "--dir", export_dir, "--all"], capture_output=True, text=True, check=True)
    for name in ("serving_default", "serve_image_bytes", "detection_boxes", "detection_scores",
                 "detection_classes", "num_detections"):
        assert name in cli.stdout
    assert "detection_masks" not in cli.stdout
    _, images = coco128
    paths = [os.path.join(images, n) for n in sorted(os.listdir(images))[:3]]
    out_file = str(tmp_path / "out.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, export_dir, out_file] + paths,
                   check=True, env=env, timeout=300)
    got = np.load(out_file)
    class_ids = np.array(trainer.train_data.class_ids)
    for i, path in enumerate(paths):
        pil = np.asarray(Image.open(path).convert("RGB"))
        # The bytes signature decodes with TF's decoder, whose pixels differ slightly from PIL's.
        decoded = tf.io.decode_image(open(path, "rb").read(), channels=3).numpy()
        for prefix, image in ((f"{i}/", pil), (f"{i}/bytes/", decoded)):
            ref = _keras_reference(trainer.model, trainer.config, image)
            n = int(got[prefix + "num_detections"][0])
            assert n == int(ref["num_detections"]) == 100  # score threshold 0
            b, s = _sorted(got[prefix + "detection_boxes"][0], got[prefix + "detection_scores"][0])
            rb, rs = _sorted(ref["boxes"], ref["scores"])
            np.testing.assert_allclose(s, rs, atol=1e-4)
            np.testing.assert_allclose(b, rb, atol=1e-3)
            assert b[:, 2].max() <= image.shape[0] + 1e-3
            assert b[:, 3].max() <= image.shape[1] + 1e-3
            assert set(got[prefix + "detection_classes"][0]) <= set(class_ids)


def test_mask_export_and_bad_input(trained_dir, tmp_path):
    model_dir, _ = trained_dir
    export_dir = saved_model.export_saved_model(model_dir, str(tmp_path / "m"), include_masks=True)
    loaded = tf.saved_model.load(export_dir)
    fn = loaded.signatures["serving_default"]
    out = fn(images=tf.zeros((2, 50, 70, 3), tf.uint8))
    assert out["detection_masks"].shape == (2, 50, 28, 28)
    # The emptiness check runs before the resize (which fails its own way on an empty
    # image): without that order the message depended on which op ran first, and this
    # test failed on a loaded machine. Repeated to catch a race.
    for _ in range(10):
        with pytest.raises(tf.errors.InvalidArgumentError, match="empty image"):
            fn(images=tf.zeros((1, 0, 5, 3), tf.uint8))
    # Grayscale and RGBA files are converted, not rejected.
    for mode, array in (("L", np.zeros((40, 30), np.uint8)), ("RGBA", np.zeros((40, 30, 4), np.uint8))):
        path = tmp_path / f"x_{mode}.png"
        Image.fromarray(array, mode).save(path)
        res = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([path.read_bytes()]))
        assert res["detection_boxes"].shape == (1, 100, 4)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([b"not an image"]))


@pytest.fixture(scope="module")
def served(trained_dir, tmp_path_factory):
    """One detection-only export of the shared run, loaded once for this module's tests."""
    model_dir, _ = trained_dir
    path = saved_model.export_saved_model(model_dir, str(tmp_path_factory.mktemp("served")))
    return tf.saved_model.load(path)


def _readme_request_command():
    """The README's command that writes a TF Serving REST request body for an image."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip().startswith("python -c 'import base64")]
    assert len(lines) == 1, lines
    return lines[0]


def _serve_rest(loaded, body):
    """What TF Serving's REST predict does with a row-format body: the signature by name,
    each instance's named inputs batched, {"b64": ...} values decoded to bytes."""
    sig = loaded.signatures[body.get("signature_name", "serving_default")]
    inputs = {}
    for instance in body["instances"]:
        for key, value in instance.items():
            if isinstance(value, dict) and "b64" in value:
                value = base64.b64decode(value["b64"])
            inputs.setdefault(key, []).append(value)
    return sig(**{k: tf.constant(v) for k, v in inputs.items()})


def test_tf_serving_layout_request_and_bad_input(trained_dir, coco128, tmp_path):
    model_dir, _ = trained_dir
    (tmp_path / "base" / ".partial-4-999999999").mkdir(parents=True)  # a killed export's
    export_dir = saved_model.export_servable(model_dir, str(tmp_path / "base"))
    assert export_dir == str(tmp_path / "base" / "4")  # the checkpoint's step
    assert sorted(os.listdir(tmp_path / "base")) == ["4"]
    assert saved_model.resolve_servable(str(tmp_path / "base")) == export_dir
    loaded = tf.saved_model.load(export_dir)
    sig = loaded.signatures["serve_image_bytes"]
    (name, spec), = sig.structured_input_signature[1].items()
    assert name.endswith("_bytes") and spec.dtype == tf.string  # TF Serving's b64 rule
    # The README's request body, as TF Serving decodes it.
    _, images = coco128
    photo = os.path.join(images, sorted(os.listdir(images))[0])
    command = _readme_request_command().replace("photo.jpg", photo).split(" > ")[0]
    body = json.loads(subprocess.run(command, shell=True, capture_output=True, text=True,
                                     check=True).stdout)
    out = _serve_rest(loaded, body)
    direct = sig(image_bytes=tf.constant([open(photo, "rb").read()]))
    assert out["detection_boxes"].shape == (1, 100, 4)
    np.testing.assert_array_equal(out["detection_scores"].numpy(),
                                  direct["detection_scores"].numpy())
    # A single string instead of a batch, an RGBA or batch-less array: a message saying
    # what is expected, not a shape mismatch.
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes must be a batch"):
        sig(image_bytes=tf.constant(open(photo, "rb").read()))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes must be a batch"):
        sig(image_bytes=tf.constant([], tf.string))  # an empty batch
    images_sig = loaded.signatures["serving_default"]
    for bad in (tf.zeros((1, 20, 30, 4), tf.uint8), tf.zeros((20, 30, 3), tf.uint8),
                tf.zeros((0, 20, 30, 3), tf.uint8)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"images must be uint8 \[batch, height, width, 3\]"):
            images_sig(images=bad)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_bytes_signature_applies_exif_orientation(served, coco128, orientation):
    """serve_image_bytes shows the model the displayed view: the same detections as
    serving_default given the displayed pixels, boxes in the displayed frame."""
    _, images = coco128
    stored = np.asarray(Image.open(os.path.join(images, sorted(os.listdir(images))[1]))
                        .convert("RGB"))[::4, ::4]
    im = Image.fromarray(stored)
    tags = im.getexif()
    tags[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=tags.tobytes())  # lossless: the same pixels on both paths
    displayed = image_io.orient(stored, orientation)
    a = served.signatures["serve_image_bytes"](image_bytes=tf.constant([buf.getvalue()]))
    b = served.signatures["serving_default"](images=tf.constant(displayed[None]))
    np.testing.assert_allclose(a["detection_scores"].numpy(), b["detection_scores"].numpy(),
                               atol=1e-6)
    # Rows of near-equal scores may come in either order: matched by class and box.
    box_err, score_err = matched(*(types.SimpleNamespace(
        boxes=d["detection_boxes"].numpy()[0], scores=d["detection_scores"].numpy()[0],
        classes=d["detection_classes"].numpy()[0]) for d in (a, b)), top=100, box_tol=1e-3,
        score_tol=1e-6)
    assert box_err <= 1e-3 and score_err <= 1e-6, (box_err, score_err)
    assert a["detection_boxes"].numpy()[0, :, 2].max() <= displayed.shape[0] + 1e-3
    assert a["detection_boxes"].numpy()[0, :, 3].max() <= displayed.shape[1] + 1e-3


def test_extreme_aspect_images_are_served(served):
    loaded = served
    for shape in ((1, 3000), (3000, 1)):
        pixels = np.full(shape + (3,), 100, np.uint8)
        out = loaded.signatures["serving_default"](images=tf.constant(pixels[None]))
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        out_bytes = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([buf.getvalue()]))
        for res in (out, out_bytes):
            n = int(res["num_detections"][0])
            boxes = res["detection_boxes"].numpy()[0, :n]
            assert boxes[:, 2].max(initial=0) <= shape[0] + 1e-3
            assert boxes[:, 3].max(initial=0) <= shape[1] + 1e-3
        np.testing.assert_allclose(out["detection_scores"].numpy(),
                                   out_bytes["detection_scores"].numpy(), atol=1e-6)


def test_export_errors_name_what_does_not_match(trained_dir, tmp_path):
    model_dir, _ = trained_dir
    with pytest.raises(saved_model.ExportError, match="no checkpoint"):
        empty = tmp_path / "empty"
        empty.mkdir()
        for name in ("config.yaml", "label_map.json"):
            (empty / name).write_text(open(os.path.join(model_dir, name)).read())
        saved_model.export_saved_model(str(empty), str(tmp_path / "x"))
    # A config that does not fit the checkpoint (wider head) is refused, naming the checkpoint.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("label_map.json",):
        (other / name).write_text(open(os.path.join(model_dir, name)).read())
    text = open(os.path.join(model_dir, "config.yaml")).read()
    (other / "config.yaml").write_text(text.replace("channels: 16", "channels: 24", 1))
    os.symlink(os.path.join(model_dir, "checkpoints"), other / "checkpoints")
    with pytest.raises(saved_model.ExportError, match="does not match"):
        saved_model.export_saved_model(str(other), str(tmp_path / "y"))
    no_mask = tmp_path / "nomask"
    no_mask.mkdir()
    (no_mask / "label_map.json").write_text(open(os.path.join(model_dir, "label_map.json")).read())
    (no_mask / "config.yaml").write_text(text.replace("enabled: true", "enabled: false"))
    with pytest.raises(saved_model.ExportError, match="no mask head"):
        saved_model.export_saved_model(str(no_mask), str(tmp_path / "z"), include_masks=True)


def _serve_in_session(export_dir, image):
    """``serving_default`` through the TF1 loader (restore op, then a session run), the
    path of TF Serving's C++ loader and ``saved_model_cli run``, unlike
    ``tf.saved_model.load``, which restores variables object by object."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = meta.signature_def["serving_default"]
        names = {k: v.name for k, v in sig.outputs.items()}
        return sess.run(names, {sig.inputs["images"].name: image})


def test_variable_and_frozen_exports_serve_the_same_detections(trained_dir, coco128, tmp_path):
    """The default export keeps variables; ``freeze=True`` writes them as constants into one
    function both signatures call. Both serve the same detections, through
    ``tf.saved_model.load`` and through the C++ loader's path (Keras 3 variables once
    failed there: "Could not find variable")."""
    model_dir, _ = trained_dir
    plain = saved_model.export_saved_model(model_dir, str(tmp_path / "plain"))
    frozen = saved_model.export_saved_model(model_dir, str(tmp_path / "frozen"), freeze=True)
    names = lambda d: {n for n, _ in tf.train.list_variables(os.path.join(d, "variables", "variables"))  # noqa: E731
                       if not n.startswith("_CHECKPOINTABLE")}
    assert not names(frozen)
    assert len(names(plain)) > 50
    # Each weight once (tracking the Keras model too saved every weight under two names).
    saved = sum(int(np.prod(shape)) for n, shape in tf.train.list_variables(
        os.path.join(plain, "variables", "variables")) if not n.startswith("_CHECKPOINTABLE"))
    model = saved_model.restore_for_export(model_dir).model
    assert saved == sum(int(np.prod(v.shape)) for v in model.variables)
    _, images = coco128
    paths = [os.path.join(images, n) for n in sorted(os.listdir(images))[:2]]
    data = tf.constant([open(p, "rb").read() for p in paths[:1]])
    image = tf.constant(np.asarray(Image.open(paths[1]).convert("RGB"))[None])
    a, b = tf.saved_model.load(frozen), tf.saved_model.load(plain)
    for sig, arg in (("serving_default", {"images": image}),
                     ("serve_image_bytes", {"image_bytes": data})):
        ra, rb = a.signatures[sig](**arg), b.signatures[sig](**arg)
        assert int(ra["num_detections"][0]) == int(rb["num_detections"][0]) == 100
        sa = _sorted(ra["detection_boxes"][0].numpy(), ra["detection_scores"][0].numpy())
        sb = _sorted(rb["detection_boxes"][0].numpy(), rb["detection_scores"][0].numpy())
        np.testing.assert_allclose(sa[1], sb[1], atol=1e-5)
        np.testing.assert_allclose(sa[0], sb[0], atol=1e-3)
    eager = b.signatures["serving_default"](images=image)
    for export in (plain, frozen):
        served = _serve_in_session(export, image.numpy())
        assert int(served["num_detections"][0]) == 100
        np.testing.assert_allclose(served["detection_scores"], eager["detection_scores"].numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(served["detection_boxes"], eager["detection_boxes"].numpy(),
                                   atol=1e-3)
    frozen_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(frozen) for f in fs)
    plain_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(plain) for f in fs)
    assert frozen_bytes < 1.5 * plain_bytes  # the weights are stored once, not per signature


def _conv_dtypes(export_dir):
    """{dtype name: how many Conv2D ops of ``serving_default``'s network compute in it}."""
    loaded = tf.saved_model.load(export_dir)
    library = loaded.signatures["serving_default"].graph.as_graph_def().library
    network = [f for f in library.function if sum(n.op == "Conv2D" for n in f.node_def)]
    assert len(network) == 1, [f.signature.name for f in network]
    return collections.Counter(tf.dtypes.as_dtype(node.attr["T"].type).name
                               for node in network[0].node_def if node.op == "Conv2D")


def test_bfloat16_export_computes_in_bfloat16_and_serves_close_detections(
        trained_dir, coco128, tmp_path):
    """``precision="bfloat16"``: every convolution but the box deltas' runs in bfloat16, the
    weights stay float32 variables (the same checkpoint keys and sizes as the float32
    export), the outputs are float32, and the detections are the float32 export's up to
    bfloat16 rounding."""
    model_dir, _ = trained_dir
    f32 = saved_model.export_saved_model(model_dir, str(tmp_path / "f32"))
    bf16 = saved_model.export_saved_model(model_dir, str(tmp_path / "bf16"), precision="bfloat16")
    convs = sum(_conv_dtypes(f32).values())
    levels = 5  # P3-P7: one box_pred conv each
    assert _conv_dtypes(f32) == {"float32": convs}
    assert _conv_dtypes(bf16) == {"bfloat16": convs - levels, "float32": levels}
    listed = lambda d: sorted(tf.train.list_variables(os.path.join(d, "variables", "variables")))  # noqa: E731
    assert listed(bf16) == listed(f32)
    reader = tf.train.load_checkpoint(os.path.join(bf16, "variables", "variables"))
    assert {reader.get_variable_to_dtype_map()[n] for n, _ in listed(bf16)
            if not n.startswith("_CHECKPOINTABLE")} == {tf.float32}
    _, images = coco128
    paths = [os.path.join(images, n) for n in sorted(os.listdir(images))[:3]]
    a, b = tf.saved_model.load(f32), tf.saved_model.load(bf16)
    for path in paths:
        image = tf.constant(np.asarray(Image.open(path).convert("RGB"))[None])
        ra, rb = a.signatures["serving_default"](images=image), b.signatures["serving_default"](
            images=image)
        assert rb["detection_boxes"].dtype == rb["detection_scores"].dtype == tf.float32
        sa, sb = ra["detection_scores"][0].numpy(), rb["detection_scores"][0].numpy()
        # Top-20 scores (about 0.02 in this barely trained model) agree to 2.6e-4 here.
        np.testing.assert_allclose(np.sort(sb)[::-1][:20], np.sort(sa)[::-1][:20], atol=1e-3)
        # Near-tied scores may swap ranks: each of float32's top 5 boxes has a bfloat16 box
        # within a pixel (0.31 px at most here, on 128-192 px images).
        ba, bb = ra["detection_boxes"][0].numpy(), rb["detection_boxes"][0].numpy()
        for box in ba[:5]:
            assert np.abs(bb - box).max(1).min() < 1.0, box
    with pytest.raises(saved_model.ExportError, match="precision must be one of float32, bfloat16"):
        saved_model.export_saved_model(model_dir, str(tmp_path / "x"), precision="float16")


def test_winograd_export_keeps_the_variables_and_the_detections(trained_dir, coco128, tmp_path):
    """``conv_algorithm="winograd"`` computes the 3x3 convs by F(4x4, 3x3) (batched
    matmuls in the served graph) from the same variables, and serves the default export's
    detections up to float32 rounding."""
    model_dir, _ = trained_dir
    plain = saved_model.export_saved_model(model_dir, str(tmp_path / "plain"))
    wino = saved_model.export_saved_model(model_dir, str(tmp_path / "wino"),
                                          overrides=["model.conv_algorithm=winograd"])
    listed = lambda d: sorted(tf.train.list_variables(os.path.join(d, "variables", "variables")))  # noqa: E731
    assert listed(wino) == listed(plain)

    def op_counts(export_dir):
        library = tf.saved_model.load(export_dir).signatures[
            "serving_default"].graph.as_graph_def().library
        return collections.Counter(n.op for f in library.function for n in f.node_def)

    assert op_counts(wino)["BatchMatMulV2"] > op_counts(plain)["BatchMatMulV2"]
    assert op_counts(wino)["Conv2D"] > 0  # the strided and 1x1 convs stay direct
    _, images = coco128
    a, b = tf.saved_model.load(plain), tf.saved_model.load(wino)
    for name in sorted(os.listdir(images))[:3]:
        image = tf.constant(np.asarray(Image.open(os.path.join(images, name)).convert("RGB"))[None])
        ra, rb = (m.signatures["serving_default"](images=image) for m in (a, b))
        sa, sb = ra["detection_scores"][0].numpy(), rb["detection_scores"][0].numpy()
        np.testing.assert_allclose(np.sort(sb)[::-1][:20], np.sort(sa)[::-1][:20], atol=1e-5)
        bb = rb["detection_boxes"][0].numpy()
        for box in ra["detection_boxes"][0].numpy()[:5]:
            assert np.abs(bb - box).max(1).min() < 0.01, box
