"""Bad image files (committed fixtures, tests/data/fixtures/make_bad_images.py): each is
converted, rotated, or skipped with a warning naming it; training never sees a bad one."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from retinamask_tf.data import coco, image_check, pipeline

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bad_images")
JSON = os.path.join(FIXTURES, "annotations.json")

USED = {  # file -> (EXIF orientation applied, words of the note)
    "ok.jpg": (1, None),
    "gray.png": (1, "grayscale converted"),
    "rgba.png": (1, "RGBA converted"),
    "palette.png": (1, "palette converted"),
    "cmyk.jpg": (1, "CMYK converted"),
    "gray16.png": (1, "16-bit grayscale converted"),
    "exif_rotated.jpg": (6, "rotated by its EXIF orientation 6"),
    "exif_same_size.jpg": (1, "EXIF orientation 3 ignored"),
}
SKIPPED = {  # file -> words of the problem
    "missing.jpg": "missing file",
    "truncated.jpg": "unreadable image",
    "not_an_image.jpg": "unreadable image",
    "image.tif": "TIFF files cannot be decoded",
    "size_mismatch.jpg": "the file is 24x32 (height x width) but the JSON says 32x32",
}


def _by_name(records, checks):
    return {os.path.basename(r.path): c for r, c in zip(records, checks)}


def test_each_file_gets_its_verdict(tmp_path):
    ds = coco.load_coco(JSON, FIXTURES)
    checks = _by_name(ds.records, image_check.check_images(ds.records, "full", str(tmp_path)))
    assert set(checks) == set(USED) | set(SKIPPED)
    for name, (orientation, note) in USED.items():
        assert checks[name].problem is None, (name, checks[name])
        assert checks[name].orientation == orientation, name
        assert (checks[name].note is None) if note is None else (note in checks[name].note), name
    for name, words in SKIPPED.items():
        assert checks[name].problem and words in checks[name].problem, (name, checks[name])
    # Header-only checking sees that a JPEG is cut short by its missing end marker.
    header = _by_name(ds.records, image_check.check_images(ds.records, "header"))
    assert "truncated JPEG file" in header["truncated.jpg"].problem
    assert "unreadable" in header["not_an_image.jpg"].problem
    assert all(header[name].problem is None for name in USED)


def test_tail_check_per_format(tmp_path):
    rgb = Image.open(os.path.join(FIXTURES, "ok.jpg")).convert("RGB")
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif")):
        whole = tmp_path / f"whole.{ext}"
        rgb.save(whole, fmt)
        data = whole.read_bytes()
        assert image_check.truncation_problem(str(whole), fmt) is None, fmt
        padded = tmp_path / f"padded.{ext}"  # some writers pad after the end marker
        padded.write_bytes(data + b"\x00" * 100)
        assert image_check.truncation_problem(str(padded), fmt) is None, fmt
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[:-20])
        assert f"truncated {fmt} file" in image_check.truncation_problem(str(cut), fmt), fmt
    assert image_check.truncation_problem(str(whole), "BMP") is None  # no end marker to check


def test_results_are_cached_by_file_signature(tmp_path, monkeypatch):
    ds = coco.load_coco(JSON, FIXTURES)
    first = image_check.check_images(ds.records, "full", str(tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("a cached file was checked again")

    monkeypatch.setattr(image_check, "check_image", fail)
    assert image_check.check_images(ds.records, "full", str(tmp_path)) == first
    # Verdicts of an older version of the checks are not reused.
    monkeypatch.setattr(image_check, "CHECK_VERSION", image_check.CHECK_VERSION + 1)
    with pytest.raises(AssertionError, match="checked again"):
        image_check.check_images(ds.records, "full", str(tmp_path))


def test_verified_dataset_skips_names_and_counts(tmp_path, caplog):
    ds = coco.load_coco(JSON, FIXTURES)
    with caplog.at_level(logging.WARNING):
        verified = pipeline.verify_images(ds, "full", str(tmp_path))
    names = {os.path.basename(r.path) for r in verified.records}
    assert names == set(USED)
    ids = {os.path.basename(r.path): r.image_id for r in ds.records}
    for name in SKIPPED:
        assert any(name in m and f"image {ids[name]}" in m for m in caplog.messages), name
    assert sum(verified.skipped_images.values()) == len(SKIPPED)
    assert verified.skipped_images["unreadable image"] == 2
    assert "5 of 13 images skipped" in verified.summary()
    with pytest.raises(coco.DatasetError, match="no usable images"):
        bad = type(ds)(**{**ds.__dict__, "records": [r for r in ds.records
                                                      if os.path.basename(r.path) in SKIPPED]})
        pipeline.verify_images(bad, "full", None)


def test_pipeline_decodes_every_kept_image_in_the_annotation_frame(tmp_path):
    ds = pipeline.verify_images(coco.load_coco(JSON, FIXTURES), "full", str(tmp_path))
    data = pipeline.build_dataset(ds, pipeline.InputSpec(batch_size=len(ds.records), image_size=(32, 32), short_side=24, long_side=32, max_instances=2, training=False))
    features, labels = next(iter(data))
    images = features["images"].numpy()
    assert images.shape == (8, 32, 32, 3)
    reference = np.asarray(Image.open(os.path.join(FIXTURES, "ok.jpg")), np.float32)
    by_id = {r.image_id: os.path.basename(r.path) for r in ds.records}
    for i, image_id in enumerate(features["image_id"].numpy()):
        name = by_id[int(image_id)]
        image = images[i, :24, :32]
        if name in ("gray.png", "gray16.png"):
            gray = reference @ np.array([0.299, 0.587, 0.114], np.float32)
            np.testing.assert_allclose(image[..., 0], gray, atol=12, err_msg=name)
        elif name != "exif_same_size.jpg":
            # RGBA, palette, CMYK and the EXIF-rotated file all give the original pixels back
            # (JPEG / palette quantisation aside): the box [4, 4, 8, 6] covers the blue block.
            assert np.abs(image - reference).mean() < 12, name
        box = labels["gt_boxes"].numpy()[i, 0].astype(int)
        blue = image[box[0]:box[2], box[1]:box[3], 2].mean()
        if name not in ("gray.png", "gray16.png", "exif_same_size.jpg"):
            assert blue > 200, (name, blue)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(orientation):
    """Each of the 8 EXIF orientations turns stored pixels into PIL's displayed view."""
    from PIL import ImageOps

    from retinamask_tf.data import parser

    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = orientation
    pil.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(pil))
    got = parser.apply_exif_orientation(stored, orientation).numpy()
    np.testing.assert_array_equal(got, expected)
