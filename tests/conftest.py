import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("RETINAMASK_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO), "shared", "data"))


def shared_path(*parts):
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data not found at {path} (set RETINAMASK_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def coco128():
    return shared_path("coco128", "annotations.json"), shared_path("coco128", "images")


@pytest.fixture(scope="session")
def fruits_nuts():
    return shared_path("fruits_nuts")


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A small built-in dataset, generated once per test session."""
    from retinamask_tf.data import synthetic
    cache = tmp_path_factory.mktemp("shapes")
    return synthetic.ensure_dataset(str(cache), num_train=48, num_val=12, image_size=128,
                                    max_objects=6, min_object_size=12.0, seed=3, progress=False)
