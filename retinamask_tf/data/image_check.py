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
counted (``data.runtime_skips``). Verdicts are remembered per file (``check_cache``: path,
size, modification time), so a file is checked once, not at every start.
"""

import concurrent.futures
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from typing import Optional

from PIL import Image

from retinamask_tf.data import check_cache
from retinamask_tf.image_io import EXIF_ORIENTATION_TAG, READ_ERRORS
from retinamask_tf.progress import Progress

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


# Part of each remembered verdict's key: raised when the checks change, so that verdicts of
# older checks (e.g. header mode before it looked at the end marker) are not reused.
CHECK_VERSION = 3
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


# From this many files to check on, they are checked in worker processes (one per core):
# the header check is Python-bound (one process: about 17k files/s), and starting the
# workers costs about a second.
PROCESS_MIN = 8192
PROGRESS_MIN = 1000  # more files than this to check: a line on them and a progress line
CHUNK = 1024
WORKER = "retinamask_tf.data.image_check"  # ``python -m`` this module: a check worker
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _in_workers(items, num_workers):
    """Yields the ImageCheck of each of ``items`` [(path, height, width, full)], in order,
    checked by ``num_workers`` processes running this module (``_worker``): chunk j goes
    to worker j % num_workers. Plain subprocesses, not multiprocessing, so that no user
    script is imported again in the workers. A worker that dies is named in a warning and
    what is left is checked in this process."""
    chunks = [items[k:k + CHUNK] for k in range(0, len(items), CHUNK)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
    procs = []
    try:
        for w in range(num_workers):
            errors = tempfile.TemporaryFile()
            proc = subprocess.Popen([sys.executable, "-m", WORKER], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
            procs.append((proc, errors))
            lines = "".join(json.dumps(item) + "\n" for chunk in chunks[w::num_workers]
                            for item in chunk)
            threading.Thread(target=_feed, args=(proc.stdin, lines), daemon=True).start()
        for j, chunk in enumerate(chunks):
            proc, errors = procs[j % num_workers]
            for k, item in enumerate(chunk):
                line = proc.stdout.readline()
                if not line:
                    errors.seek(0)
                    log.warning("an image check worker stopped (%s); checking the remaining "
                                "%d files in this process", errors.read().decode(
                                    errors="replace").strip()[-500:] or "no message",
                                len(items) - j * CHUNK - k)
                    rest = chunk[k:] + [item for c in chunks[j + 1:] for item in c]
                    yield from (check_image(*item) for item in rest)
                    return
                yield ImageCheck(**json.loads(line))
    finally:
        for proc, errors in procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            errors.close()


def _feed(stream, text):
    try:
        stream.write(text)
        stream.close()
    except (BrokenPipeError, ValueError):  # the worker was stopped
        pass


def _worker():
    """The check worker: JSON lines [path, height, width, full] in, the verdict of each out."""
    for n, line in enumerate(sys.stdin, 1):
        print(json.dumps(vars(check_image(*json.loads(line)))), flush=n % 256 == 0)


def _verdicts(items, full, num_workers):
    """Yields the ImageCheck of each of ``items`` [(path, height, width, full)], in order:
    in ``num_workers`` worker processes past ``PROCESS_MIN`` items (``_in_workers``), else
    decoding in a thread pool (``full``: PIL releases the GIL while decoding) or in this
    thread (``header``), one at a time."""
    if len(items) >= PROCESS_MIN and num_workers > 1:
        yield from _in_workers(items, num_workers)
        return
    if not full:
        yield from (check_image(*item) for item in items)
        return
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        for k in range(0, len(items), CHUNK):  # a bounded number of futures
            yield from pool.map(lambda item: check_image(*item), items[k:k + CHUNK])


def check_images(records, mode="full", cache_dir=None, progress=False, num_workers=None):
    """``check_image`` for each ``ImageRecord``; returns [ImageCheck] in the same order.

    Verdicts are remembered in ``cache_dir`` (``check_cache``) as they are made; only files
    without one are checked (``_verdicts``: in worker processes when there are many).

    Args:
      mode: "full" (decode), "header" or "off" (everything passes).
      cache_dir: the folder of the remembered verdicts, or None.
      progress: past ``PROGRESS_MIN`` files to check, say how many (and how many are
        remembered) and show a progress line.
      num_workers: processes or threads; default one per core.
    """
    if mode == "off":
        return [ImageCheck() for _ in records]
    full = mode == "full"
    cache = check_cache.VerdictCache(cache_dir)
    keys = [check_cache.file_key(r.path, r.height, r.width, CHECK_VERSION) for r in records]
    results = [cache.get(key, mode) for key in keys]
    todo = [i for i, verdict in enumerate(results) if verdict is None]
    bar = None
    if progress and len(todo) > PROGRESS_MIN:
        print(f"Checking {len(todo)} image files ({mode}; {len(records) - len(todo)} "
              "remembered from earlier checks)", flush=True)
        bar = Progress(len(todo), unit="image")
    items = [(records[i].path, records[i].height, records[i].width, full) for i in todo]
    try:
        verdicts = _verdicts(items, full, num_workers or os.cpu_count() or 1)
        for position, verdict in enumerate(verdicts):
            i = todo[position]
            results[i] = dict(vars(verdict))  # (dataclasses.asdict: 10x slower)
            cache.put(keys[i], mode, results[i])
            if bar:
                bar.update(position + 1)
    finally:
        cache.flush()  # what was checked is kept, also when stopped halfway
    return [ImageCheck(**verdict) for verdict in results]


if __name__ == "__main__":
    _worker()
