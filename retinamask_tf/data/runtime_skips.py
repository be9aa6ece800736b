"""Images the input pipeline could not decode after the start-up check passed them.

The start-up check (``data.image_check``) is the main gate: what it rejects is named and
counted in the ``Data:`` line. What can still fail later is a file changed on disk after
the check, or (with ``data.verify_images=header`` or ``off``) one corrupt past what was
read. Such an image is dropped from the stream, never silently: it is logged with its
file, image id and reason, and counted here, so a run can report exactly which images it
did not see.
"""

import logging
import os
import threading

from PIL import Image

from retinamask_tf.data.errors import DatasetError
from retinamask_tf.image_io import READ_ERRORS

log = logging.getLogger(__name__)


def why_unreadable(path):
    """The reason a file failed to decode, as far as PIL can tell (it re-reads the file)."""
    if not path:
        return "could not be decoded (stored image bytes)"
    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        return "file missing (removed after the start-up check)"
    except READ_ERRORS as e:
        return f"unreadable image ({type(e).__name__}: {e})"
    return "TensorFlow could not decode it (PIL can: changed on disk after the check?)"


class RuntimeSkips:
    """Thread-safe record of the images dropped while streaming (tf.data calls ``add``
    from its worker threads).

    ``total``: the number of images in the stream, for a stream that repeats (training):
    once every one of them has failed, ``add`` raises ``DatasetError`` instead of letting
    the stream filter forever (``exhausted`` says so afterwards).
    """

    def __init__(self, name="", total=None):
        self.name = name
        self.total = total
        self.exhausted = False
        self._lock = threading.Lock()
        self.images = {}  # image_id -> (path, reason)
        self.count = 0  # drops, counting an image again each epoch it fails
        # (image_id, path, count) of the images with more than data.max_instances
        # annotations: the smallest are left out of every example (set by build_dataset).
        self.truncated = []

    def add(self, path, image_id):
        path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
        reason = why_unreadable(path)
        with self._lock:
            self.count += 1
            first = int(image_id) not in self.images
            self.images[int(image_id)] = (path, reason)
        if first:
            log.warning("%sdropped image %d (%s) from the input stream: %s",
                        f"{self.name}: " if self.name else "", int(image_id), path or "-",
                        reason)
        if self.total and len(self.images) >= self.total:
            self.exhausted = True
            raise DatasetError(f"{self.name}: none of the {self.total} images could be "
                               f"decoded: {self.summary()}")

    def truncation_summary(self, max_instances):
        """One line on the annotations ``data.max_instances`` leaves out, or ''."""
        if not self.truncated:
            return ""
        left_out = sum(c - max_instances for _, _, c in self.truncated)
        return (f"{left_out} annotations of {len(self.truncated)} images left out by "
                f"data.max_instances={max_instances} (the smallest; images named in the log)")

    def summary(self):
        """One line for the end of a run, or '' when nothing was dropped."""
        with self._lock:
            if not self.images:
                return ""
            listed = ", ".join(f"{i} ({p})" for i, (p, _) in list(self.images.items())[:10])
            more = f" and {len(self.images) - 10} more" if len(self.images) > 10 else ""
            return (f"{len(self.images)} images could not be decoded while streaming and were "
                    f"dropped ({self.count} times in all): {listed}{more}; their reasons are in "
                    "the log above")
