"""retinamask-tf: RetinaMask in TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="retinamask-tf",
    version="0.1.0",
    description="RetinaMask (Fu, Shvets, Berg 2019): single-shot detection improved by "
                "learning to predict masks, in TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["retinamask_tf", "retinamask_tf.*"]),
    py_modules=[],
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "tensorboard==2.21.*",
        "pycocotools>=2.0.8",
        "absl-py>=2.1",
        "pyyaml>=6.0",
        "numpy>=1.26",
        "pillow>=10.0",
        "ai-edge-litert>=2.0",  # the TFLite runtime (tflite/run.py, int8 export)
    ],
    extras_require={
        # tensorflow-datasets imports importlib_resources for builders defined in packages
        # without declaring it.
        "tfds": ["tensorflow-datasets>=4.9.9", "importlib_resources>=6.0"],
        "plots": ["matplotlib>=3.8"],
        # --openvino: an OpenVINO IR of the detector, and rm.load() of it (CPU servers).
        "openvino": ["openvino>=2026.4"],
        # The TFDS tests build a small TFDS dataset and the plot tests draw, so the tests
        # install the tfds and plots extras; pytest-xdist runs them in two processes.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "tensorflow-datasets>=4.9.9",
                 "importlib_resources>=6.0", "matplotlib>=3.8"],
    },
)
