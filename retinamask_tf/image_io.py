"""Image files to RGB arrays with PIL: one orientation policy for every path that reads
files outside TensorFlow (NumPy and PIL only, so the TFLite runner can use it).

The policy:
  images a user brings (``--mode=predict``, ``tflite/run.py``, the serving signature that
  takes bytes)      are shown to the model as displayed: the file's EXIF orientation is
                    applied (``orientation=DISPLAYED``; in the serving graph,
                    ``ops.exif``);
  dataset images    are read in the frame their annotations use, which the start-up check
                    decided (``data.image_check``) and stored in ``ImageRecord.orientation``
                    (LiteRT evaluation, int8 calibration, drawings): pass that value.
"""

import glob
import io
import os

import numpy as np
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112
DISPLAYED = "exif"


def orient(image, orientation):
    """NumPy twin of ``ops.exif.apply_exif_orientation``: stored [H, W, C] -> the view of
    EXIF ``orientation`` (1..8; anything else leaves the image)."""
    try:
        o = int(orientation)
    except (TypeError, ValueError):  # a malformed tag
        return image
    if not 1 <= o <= 8:
        return image
    if o >= 5:
        image = image.transpose(1, 0, 2)
    if o in (2, 3, 6, 7):
        image = image[:, ::-1]
    if o in (3, 4, 7, 8):
        image = image[::-1]
    return np.ascontiguousarray(image)


def read_rgb(source, orientation=DISPLAYED):
    """An image file as [H, W, 3] uint8 RGB (grayscale, palette, RGBA, CMYK converted).

    Args:
      source: a path, encoded bytes or a binary file object.
      orientation: ``DISPLAYED`` to apply the file's own EXIF orientation, or an int
        (1..8) to apply that one instead (1: the stored pixels).
    Raises:
      OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError: unreadable.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as im:
        if orientation == DISPLAYED:
            orientation = im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1
        image = np.asarray(im.convert("RGB"))
    return orient(image, orientation)


# What ``read_rgb`` may raise for a file that is not a readable image.
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# PIL formats that are registered but only as stubs (they need a handler installed), or
# that hold no raster image here.
_NOT_IMAGES = {"BUFR", "GRIB", "HDF5", "WMF", "MPEG", "EPS", "PDF"}


def image_extensions():
    """File-name endings of every format PIL can open here (.jpg, .png, .webp, .tif, ...)."""
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _NOT_IMAGES))


def expand_images(patterns):
    """Image paths from files, globs and directories (their files in any format PIL
    opens, ``image_extensions``), sorted within each pattern, without repeats.

    Raises:
      FileNotFoundError: naming a pattern that matches nothing.
    """
    extensions = image_extensions()
    paths, seen = [], set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = [os.path.join(pattern, n) for n in os.listdir(pattern)
                     if n.lower().endswith(extensions)]
        else:
            found = glob.glob(os.path.expanduser(pattern))
        if not found:
            raise FileNotFoundError(f"'{pattern}' matches no image file")
        for path in sorted(found):
            if path not in seen:
                seen.add(path)
                paths.append(path)
    return paths
