"""--mode=predict: the checkpoint and SavedModel predictors agree, and the drawings and
COCO results JSON are written, with a bad file reported and skipped."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from retinamask_tf import predict
from retinamask_tf.detector import Detector
from retinamask_tf.export import saved_model
from retinamask_tf.image_io import read_rgb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(coco128, n):
    _, images = coco128
    return [os.path.join(images, name) for name in sorted(os.listdir(images))[:n]]


def test_checkpoint_and_saved_model_predictors_agree(trained_dir, coco128, tmp_path):
    model_dir, _ = trained_dir
    export_dir = saved_model.export_saved_model(model_dir, str(tmp_path / "sm"), include_masks=True)
    ckpt, served = Detector.from_run_dir(model_dir), predict.SavedModelPredictor(export_dir)
    for path in _images(coco128, 2):
        image = read_rgb(path)
        a, b = ckpt(image), served(image)
        assert len(a["boxes"]) == len(b["boxes"]) == 100  # the fixture's score threshold is 0
        order_a, order_b = np.argsort(-a["scores"], kind="stable"), np.argsort(-b["scores"], kind="stable")
        np.testing.assert_allclose(a["scores"][order_a], b["scores"][order_b], atol=1e-4)
        assert set(a["names"]) <= set(ckpt.class_names) and set(b["names"]) <= set(ckpt.class_names)
        assert a["boxes"][:, 2].max() <= image.shape[0] + 1e-3
        assert a["boxes"][:, 3].max() <= image.shape[1] + 1e-3
        # Masks pasted into the image: the top detection's mask agrees with the SavedModel's
        # mask of the same detection (matched by class and box: near-tied scores may swap).
        assert a["masks"].shape[1:] == image.shape[:2] and a["masks"].dtype == bool
        assert b["masks"].shape == a["masks"].shape
        cost = np.abs(b["boxes"] - a["boxes"][0]).max(1) + 1e6 * (b["category_ids"] != a["category_ids"][0])
        j = int(np.argmin(cost))
        assert cost[j] < 1.0 and j < len(b["masks"])
        inter = np.logical_and(a["masks"][0], b["masks"][j]).sum()
        union = np.logical_or(a["masks"][0], b["masks"][j]).sum()
        assert union == 0 or inter / union > 0.9


def test_predict_files_writes_drawings_and_coco_results(trained_dir, coco128, tmp_path):
    model_dir, _ = trained_dir
    paths = _images(coco128, 2)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    twin = tmp_path / os.path.basename(paths[0])  # same file name in another folder
    shutil.copy(paths[0], twin)
    out = predict.predict_files(Detector.from_run_dir(model_dir),
                                paths + [str(bad), str(twin)], str(tmp_path / "out"), 0.0)
    assert [p for p, _ in out["failed"]] == [str(bad)]
    assert len(out["drawn"]) == 3 and len(set(out["drawn"])) == 3
    results = json.load(open(out["results_json"]))
    assert out["num_detections"] == len(results) == 300
    assert {r["image_id"] for r in results} == {1, 2, 4}
    for r in results:
        if r["image_id"] != 1:
            continue
        image = Image.open(paths[0])
        assert r["file_name"] == paths[0]
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image.width + 0.01 and y + h <= image.height + 0.01
        if "segmentation" in r:
            assert mask_utils.decode(dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
                                     ).shape == (image.height, image.width)
    assert sum("segmentation" in r for r in results if r["image_id"] == 1) == 50  # num_masks
    drawn = Image.open(out["drawn"][0])
    assert drawn.size == Image.open(paths[0]).size
    assert np.abs(np.asarray(drawn, np.int16) - np.asarray(Image.open(paths[0]).convert("RGB"),
                                                            np.int16)).max() > 0


def test_predict_command_line(trained_dir, coco128, tmp_path):
    """A folder in every format PIL reads (WebP and TIFF too), an extreme-aspect image and
    a broken file: each good image is drawn and in results.json, the broken one is named,
    and the exit status says that one failed."""
    model_dir, _ = trained_dir
    folder = tmp_path / "photos"
    folder.mkdir()
    first, second = _images(coco128, 2)
    shutil.copy(first, folder / "a.jpg")
    Image.open(second).save(folder / "b.webp")
    Image.open(second).save(folder / "c.tif")
    Image.fromarray(np.full((1, 3000, 3), 128, np.uint8)).save(folder / "wide.png")
    (folder / "broken.png").write_bytes(b"\x89PNG garbage")
    (folder / "notes.txt").write_text("not an image: not picked up")
    out_dir = tmp_path / "drawn"
    res = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=predict",
                          f"--model_dir={model_dir}", f"--images={folder}",
                          f"--output_dir={out_dir}"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert f"{folder / 'broken.png'}: unreadable image" in res.stderr
    assert "1 of 5 images failed" in res.stderr
    assert "results.json" in res.stdout
    drawn = sorted(n for n in os.listdir(out_dir) if n.endswith(".png"))
    assert drawn == ["a.png", "b.png", "c.png", "wide.png"]
    results = json.load(open(out_dir / "results.json"))
    assert {os.path.basename(r["file_name"]) for r in results} == {"a.jpg", "b.webp", "c.tif",
                                                                   "wide.png"}
    missing = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), "--mode=predict",
                              f"--model_dir={model_dir}", "--images=/nonexistent/*.jpg"],
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert missing.returncode == 2 and "'/nonexistent/*.jpg' matches no image file" in missing.stderr
