"""--mode=predict: the drawings and COCO results JSON are written, from a run directory or
an export, with a bad file reported and skipped."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from retinamask_tf import predict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(coco128, n):
    _, images = coco128
    return [os.path.join(images, name) for name in sorted(os.listdir(images))[:n]]


def test_predict_files_writes_drawings_and_coco_results(trained_dir, coco128, tmp_path):
    model_dir, _ = trained_dir
    paths = _images(coco128, 2)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    twin = tmp_path / os.path.basename(paths[0])  # same file name in another folder
    shutil.copy(paths[0], twin)
    out = predict.predict_files(predict.load(model_dir),
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
