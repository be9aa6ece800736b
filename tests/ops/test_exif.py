"""EXIF orientation: the in-graph reader against PIL's, for all 8 orientations, both TIFF
byte orders, JPEG and PNG, and malformed bytes; the graph and NumPy appliers against PIL's
``exif_transpose``; every reader applies one policy."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from retinamask_tf import image_io
from retinamask_tf.data import parser
from retinamask_tf.ops import exif

STORED = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)


def _encoded(orientation, fmt="JPEG", array=STORED):
    im = Image.fromarray(array)
    tags = im.getexif()
    tags[0x010F] = "Camera"  # another tag before it in IFD0
    if orientation is not None:
        tags[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, exif=tags.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _big_endian_jpeg(orientation):
    """A JPEG whose APP1 holds a hand-written big-endian ("MM") TIFF block."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    plain = _encoded(None)
    return plain[:2] + app1 + plain[2:]  # right after SOI, before the writer's segments


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reads_the_tag_as_pil_does(fmt):
    for orientation in [None] + list(range(1, 10)):
        data = _encoded(orientation, fmt)
        pil = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
        expected = pil if 1 <= pil <= 8 else 1
        assert int(exif.exif_orientation(tf.constant(data))) == expected, (fmt, orientation)


def test_big_endian_and_malformed_bytes():
    for orientation in range(1, 9):
        data = _big_endian_jpeg(orientation)
        assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
        assert int(exif.exif_orientation(tf.constant(data))) == orientation
    good = _encoded(6)
    cut = good.index(b"Exif") + 12
    for data in (b"", b"xy", b"\xff\xd8", good[:cut], b"\xff\xd8\xff\xe1\xff\xffExif\x00\x00II",
                 b"\x89PNG\r\n\x1a\n\x00\x00\x00\x04eXIfII", _encoded(6, "PNG")[:30]):
        assert int(exif.exif_orientation(tf.constant(data))) == 1, data[:40]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_appliers_match_pil_exif_transpose(orientation):
    pil = Image.fromarray(STORED)
    tags = pil.getexif()
    tags[0x0112] = orientation
    pil.info["exif"] = tags.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(pil))
    np.testing.assert_array_equal(exif.apply_exif_orientation(STORED, orientation).numpy(),
                                  expected)
    np.testing.assert_array_equal(image_io.orient(STORED, orientation), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_graph_and_pil_readers_show_the_displayed_view(orientation, tmp_path):
    """The serving graph's decoder (``parser.decode_displayed``) and ``image_io.read_rgb``
    (predict, tflite/run.py) both give the displayed view; a dataset record's own
    orientation overrides the file's tag."""
    data = _encoded(orientation, "PNG")  # lossless: the two decoders agree exactly
    displayed = image_io.orient(STORED, orientation)
    np.testing.assert_array_equal(parser.decode_displayed(tf.constant(data)).numpy(), displayed)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(image_io.read_rgb(str(path)), displayed)
    np.testing.assert_array_equal(image_io.read_rgb(data), displayed)
    np.testing.assert_array_equal(image_io.read_rgb(str(path), 1), STORED)
    jpeg = _encoded(orientation, "JPEG")
    tf_view = parser.decode_displayed(tf.constant(jpeg)).numpy()
    pil_view = image_io.read_rgb(jpeg)
    assert tf_view.shape == pil_view.shape == displayed.shape
    assert np.abs(tf_view.astype(int) - pil_view).mean() < 2  # two JPEG decoders
