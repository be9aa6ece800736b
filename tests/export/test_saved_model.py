"""SavedModel export: signatures, parity with the Keras model in a fresh process, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from retinamask_tf.data import parser
from retinamask_tf.export import saved_model

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
    padded, info = parser.resize_and_pad(tf.constant(image, tf.float32), config.data.short_side,
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


def test_frozen_export_matches_variable_export(trained_dir, coco128, tmp_path):
    """The default export freezes the weights into one function both signatures call; it
    serves the same detections as an export that keeps variables, and stores no variables."""
    model_dir, _ = trained_dir
    frozen = saved_model.export_saved_model(model_dir, str(tmp_path / "frozen"))
    plain = saved_model.export_saved_model(model_dir, str(tmp_path / "plain"), freeze=False)
    names = lambda d: {n for n, _ in tf.train.list_variables(os.path.join(d, "variables", "variables"))  # noqa: E731
                       if not n.startswith("_CHECKPOINTABLE")}
    assert not names(frozen)
    assert len(names(plain)) > 50
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
    frozen_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(frozen) for f in fs)
    plain_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(plain) for f in fs)
    assert frozen_bytes < 1.5 * plain_bytes  # the weights are stored once, not per signature
