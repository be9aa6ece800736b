"""Remembered image-check verdicts (``data.image_check``), so that a resume, a second run or
an evaluation over the same files does not check them again.

A verdict is keyed by the file's identity (absolute path, size, modification time in ns,
inode), the size the JSON gives the image and the version of the checks: a changed,
replaced or moved file is checked again. A ``full`` verdict (the file was decoded) also
answers a ``header`` request; a ``header`` one answers only ``header``.

The cache is ``<cache_dir>/image_checks.jsonl``, one JSON line per verdict, appended in
batches as the checks finish (every ``FLUSH_EVERY`` verdicts or ``FLUSH_SECONDS``), so
that a check stopped halfway (killed, out of power) keeps what it did. Later lines win; a
torn last line is ignored. Several processes may append at once (each batch is one
``write`` to a file opened for appending). When most lines are superseded the file is
rewritten with the live ones.
"""

import json
import os
import time

FILE_NAME = "image_checks.jsonl"
FLUSH_EVERY = 2000
FLUSH_SECONDS = 5.0
COMPACT_SLACK = 10000  # superseded lines tolerated beyond as many as there are live ones


def file_key(path, height, width, version):
    """The identity of one check: version, absolute path, JSON size and the file's stat
    (``missing`` when it does not exist)."""
    try:
        st = os.stat(path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    except OSError:
        stamp = "missing"
    return f"{version}|{os.path.abspath(path)}|{height}x{width}|{stamp}"


class VerdictCache:
    """``get(key, mode)`` / ``put(key, mode, verdict)`` over the cache file (or in memory
    only when ``cache_dir`` is None); verdicts are dicts of ``image_check.ImageCheck``."""

    def __init__(self, cache_dir):
        self.path = (os.path.join(os.path.expanduser(cache_dir), FILE_NAME)
                     if cache_dir else None)
        self.entries = {}  # key -> (mode, verdict)
        self.pending = []
        self.last_flush = time.monotonic()
        if self.path and os.path.exists(self.path):
            self._load()

    def _load(self):
        lines = 0
        with open(self.path, "rb") as f:
            for line in f:
                lines += 1
                try:
                    key, mode, verdict = json.loads(line)
                except (ValueError, TypeError):  # a torn line: that file is checked again
                    continue
                self.entries[key] = (mode, verdict)
        if lines > 2 * len(self.entries) + COMPACT_SLACK:
            self._compact()

    def _compact(self):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            for key, (mode, verdict) in self.entries.items():
                f.write(json.dumps([key, mode, verdict]) + "\n")
        os.replace(tmp, self.path)

    def get(self, key, mode):
        """The verdict remembered for ``key`` that answers ``mode``, or None."""
        entry = self.entries.get(key)
        if entry is None or (mode == "full" and entry[0] != "full"):
            return None
        return entry[1]

    def put(self, key, mode, verdict):
        self.entries[key] = (mode, verdict)
        if self.path:
            self.pending.append(json.dumps([key, mode, verdict]) + "\n")
            if (len(self.pending) >= FLUSH_EVERY
                    or time.monotonic() - self.last_flush > FLUSH_SECONDS):
                self.flush()

    def flush(self):
        """Appends the verdicts not yet written, in one write."""
        if not self.pending:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        data = "".join(self.pending).encode()  # ASCII: json.dumps escapes the rest
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # after a torn line
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.pending = []
        self.last_flush = time.monotonic()
