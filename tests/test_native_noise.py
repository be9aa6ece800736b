"""TensorFlow's start-up noise is dropped on machines without a GPU; other lines show."""

import os
import subprocess
import sys

from retinamask_tf import native_noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stderr(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(env, PYTHONPATH=REPO), timeout=300, check=True)
    return out.stderr


def test_tensorflow_starts_quietly_without_a_gpu():
    code = ("from retinamask_tf.native_noise import import_tensorflow; tf = import_tensorflow();"
            "import sys; print('after', float(tf.constant(2.0) * 2), file=sys.stderr)")
    assert _stderr(code).strip() == "after 4.0"
    if not os.path.exists(native_noise.NVIDIA_DRIVER):
        # Plain TF prints the cuInit error here, which is what is dropped above.
        assert "failed call to cuInit" in _stderr("import tensorflow as tf; tf.constant(1)")


def test_only_the_listed_lines_are_dropped(capfd):
    with native_noise.drop_known_native_noise(native_noise.startup_noise("/nonexistent")):
        os.write(2, b"E0000 00:00 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR\n")
        os.write(2, b"E0000 something real went wrong\n")
        os.write(1, b"oneDNN custom operations are on. You may see ...\nresult 42\n")
    out, err = capfd.readouterr()
    assert out == "result 42\n" and err == "E0000 something real went wrong\n"
    # With an NVIDIA driver installed, a failed cuInit is a real error and shows.
    assert not set(native_noise.NO_GPU_NOISE) & set(native_noise.startup_noise(__file__))
