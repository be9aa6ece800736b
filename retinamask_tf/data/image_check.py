"""Start-up check of every image file a dataset refers to (PIL, once, cached).

What is decided for each kind of file (docs/data.md, "Bad input", lists the same):
  converted, used   grayscale, RGBA, palette, CMYK, 16-bit PNG: TF's decoder turns them
                    into 8-bit RGB (``parser.decode_image`` asks for 3 channels);
  EXIF orientation  the annotations are taken in the frame of the stored pixels (as the
                    released code, which reads with PIL without ``exif_transpose``, and
                    TF's decoder, which ignores EXIF) when the JSON's size is the stored
                    size; when the JSON has the *displayed* size of a 90-degree orientation
                    (width and height swapped), the annotations were drawn on the rotated
                    view, so the image is rotated the same way at decode time;
  skipped           missing file, unreadable / truncated / not an image, a format TF cannot
                    decode, a size that disagrees with the JSON: the image and its
                    annotations are left out with a warning naming the file and image id,
                    and counted in the summary printed at the start of training.
``mode="full"`` decodes every image once (catches truncated and corrupt files);
``"header"`` reads the header and checks the file's end (a JPEG's end-of-image marker, a
PNG's IEND chunk, a GIF's trailer), which catches truncated files without decoding (fast
on very large datasets); ``"off"`` trusts the files. A file that still fails to decode in
tf.data (corrupt inside, or changed on disk after the check) is dropped there, named and
counted (``data.runtime_skips``). Results are cached per file (path, size, mtime) so the
check runs once.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
from typing import Optional

from PIL import Image

from retinamask_tf.image_io import EXIF_ORIENTATION_TAG, READ_ERRORS

log = logging.getLogger(__name__)

# EXIF orientations whose displayed image has width and height swapped.
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
TF_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
CONVERTED_MODES = {"L": "grayscale", "LA": "grayscale + alpha", "RGBA": "RGBA", "P": "palette",
                   "PA": "palette + alpha", "CMYK": "CMYK", "I;16": "16-bit grayscale",
                   "I;16B": "16-bit grayscale", "I": "32-bit grayscale", "1": "1-bit"}


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """The verdict on one image file.

    problem: None if the image is usable, else why it is skipped (with details).
    kind: the problem's category, for the summary counts.
    orientation: the EXIF orientation to apply at decode time (1: none).
    note: a conversion that happens (e.g. "CMYK converted to RGB"), for the summary.
    """

    problem: Optional[str] = None
    kind: Optional[str] = None
    orientation: int = 1
    note: Optional[str] = None


# Part of each cached verdict's key: raised when the checks change, so that verdicts of
# older checks (e.g. header mode before it looked at the end marker) are not reused.
CHECK_VERSION = 2
# What each format's last bytes hold when the file is complete. JPEG writers may pad
# after the end-of-image marker, so it is looked for in the last bytes, not only at the end.
TAIL_BYTES = 1024
TAIL_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND", "GIF": b"\x3b"}


def truncation_problem(path, fmt):
    """Why the file looks cut short (its format's end marker is missing), or None."""
    marker = TAIL_MARKERS.get(fmt)
    if marker is None:
        return None
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        tail = f.read()
    if fmt == "GIF":
        found = tail.rstrip(b"\x00").endswith(marker)
    else:
        found = marker in tail
    return None if found else f"truncated {fmt} file (no end marker in its last {TAIL_BYTES} bytes)"


def check_image(path, height, width, full=True):
    """Checks one file against the (height, width) the JSON gives it; see the module doc."""
    if not os.path.isfile(path):
        return ImageCheck(problem="missing file", kind="missing file")
    try:
        with Image.open(path) as im:
            fmt, (file_w, file_h), mode = im.format, im.size, im.mode
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            if full:
                im.load()
        truncated = None if full else truncation_problem(path, fmt)
    except READ_ERRORS as e:
        return ImageCheck(problem=f"unreadable image ({type(e).__name__}: {e})",
                          kind="unreadable image")
    if truncated:
        return ImageCheck(problem=f"unreadable image ({truncated})", kind="unreadable image")
    if fmt not in TF_FORMATS:
        return ImageCheck(problem=f"{fmt} files cannot be decoded by TensorFlow "
                                  f"(use one of {', '.join(TF_FORMATS)})",
                          kind="unsupported format")
    note = f"{CONVERTED_MODES[mode]} converted to RGB" if mode in CONVERTED_MODES else None
    if (file_h, file_w) == (height, width):
        if orientation != 1:
            note = (note + "; " if note else "") + (
                f"EXIF orientation {orientation} ignored (annotations in the stored-pixel frame)")
        return ImageCheck(note=note)
    if orientation in TRANSPOSED_ORIENTATIONS and (file_w, file_h) == (height, width):
        return ImageCheck(orientation=orientation, note=(note + "; " if note else "") + (
            f"rotated by its EXIF orientation {orientation} (the JSON has the displayed size)"))
    return ImageCheck(problem=f"the file is {file_h}x{file_w} (height x width) but the JSON "
                              f"says {height}x{width}", kind="size differs from the JSON")


def _cache_key(path, height, width, full):
    stat = os.stat(path) if os.path.exists(path) else None
    sig = (CHECK_VERSION, os.path.abspath(path), height, width, full,
           (stat.st_size, stat.st_mtime_ns) if stat else None)
    return hashlib.sha1(repr(sig).encode()).hexdigest()


def check_images(records, mode="full", cache_dir=None, progress=None, num_workers=None):
    """``check_image`` for each ``ImageRecord``; returns [ImageCheck] in the same order.

    Args:
      mode: "full" (decode), "header" or "off" (everything passes).
      cache_dir: a folder for ``image_checks.json`` (results by file signature), or None.
      progress: a callable(done) or None.
    """
    if mode == "off":
        return [ImageCheck() for _ in records]
    full = mode == "full"
    cache_path = os.path.join(os.path.expanduser(cache_dir), "image_checks.json") if cache_dir else None
    cache = {}
    if cache_path and os.path.exists(cache_path):
        try:
            with open(cache_path) as f:
                cache = json.load(f)
        except (OSError, json.JSONDecodeError):
            cache = {}
    keys = [_cache_key(r.path, r.height, r.width, full) for r in records]
    results = [None] * len(records)
    todo = []
    for i, key in enumerate(keys):
        if key in cache:
            results[i] = ImageCheck(**cache[key])
        else:
            todo.append(i)
    with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        futures = {pool.submit(check_image, records[i].path, records[i].height,
                               records[i].width, full): i for i in todo}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            i = futures[future]
            results[i] = future.result()
            if progress:
                progress(done)
    if cache_path and todo:
        for i in todo:
            cache[keys[i]] = dataclasses.asdict(results[i])
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}.tmp"  # several processes may write at once
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, cache_path)
    return results
