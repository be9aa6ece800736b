"""Filters known-harmless native log lines (TF converter, LiteRT) out of stdout/stderr.

The TFLite converter and the LiteRT interpreter write from C++ straight to file
descriptors 1 and 2, past Python's logging and TF_CPP_MIN_LOG_LEVEL, e.g. one
"NodeDef mentions attribute Truncate ..." error line per conversion that means nothing.
Only the lines listed here are dropped; everything else is passed through unchanged.
"""

import contextlib
import os
import sys
import tempfile

KNOWN_NOISE = (
    "NodeDef mentions attribute Truncate which is not in the op definition",
    "fully_quantize: 0, inference_type:",
    "Created TensorFlow Lite XNNPACK delegate for CPU",
)


@contextlib.contextmanager
def drop_known_native_noise(noise=KNOWN_NOISE):
    """Captures fds 1 and 2 during the block, then re-emits every line not in ``noise``."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    captured = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    try:
        for fd in (1, 2):
            os.dup2(captured[fd].fileno(), fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            captured[fd].seek(0)
            for line in captured[fd].read().decode("utf-8", "replace").splitlines(True):
                if not any(n in line for n in noise):
                    os.write(fd, line.encode("utf-8"))
            captured[fd].close()
