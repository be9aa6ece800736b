"""Filters known-harmless native log lines (TF start-up, TF converter, LiteRT) out of
stdout/stderr.

TensorFlow, the TFLite converter and the LiteRT interpreter write from C++ straight to
file descriptors 1 and 2, past Python's logging and (before absl's logging starts, at
import) past TF_CPP_MIN_LOG_LEVEL too: e.g. one "NodeDef mentions attribute Truncate ..."
error line per conversion, and on every machine without a GPU an ``E0000 ... failed call
to cuInit`` line that reads like a failure. Only the lines listed here are dropped;
everything else is passed through unchanged.
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
# TensorFlow's import and device discovery, on any machine.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)
# ... and on a machine with no NVIDIA driver, where no GPU was to be found. With a driver,
# a failed cuInit is a real problem and is shown.
NO_GPU_NOISE = (
    "Could not find cuda drivers on your machine, GPU will not be used.",
    "failed call to cuInit",
)
NVIDIA_DRIVER = "/proc/driver/nvidia/version"


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


def startup_noise(driver_file=NVIDIA_DRIVER):
    """The start-up lines to drop on this machine (``NO_GPU_NOISE`` only without a driver)."""
    return STARTUP_NOISE + (() if os.path.exists(driver_file) else NO_GPU_NOISE)


def import_tensorflow():
    """``import tensorflow`` and its device discovery without the start-up noise above;
    returns the module. Anything else TF prints meanwhile still shows."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with drop_known_native_noise(startup_noise()):
        import tensorflow as tf
        tf.config.list_physical_devices()  # finds (or fails to find) the GPUs, once
    return tf
