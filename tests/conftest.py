import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The folder holding the real test datasets (coco128/, fruits_nuts/); tests that need them
# are skipped with a message when it is not set or lacks them.
TEST_DATA = os.environ.get("RETINAMASK_TEST_DATA")


def shared_path(*parts):
    if not TEST_DATA:
        pytest.skip("test datasets not found: set RETINAMASK_TEST_DATA to the folder holding "
                    "coco128/ and fruits_nuts/")
    path = os.path.join(TEST_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"test dataset not found at {path} (RETINAMASK_TEST_DATA)")
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


def tiny_overrides(shapes, overrides=None):
    """{dotted key: value} of the small training tests: ``tiny_shapes`` data at 128x128, a
    width-16 ResNet-18 with 16-channel FPN/head and a one-conv mask head, batch 2, lr warm-up
    of one step; ``overrides`` on top."""
    return {
        "data.kind": "coco", "data.train_json": shapes["train_json"],
        "data.train_images": shapes["train_images"], "data.val_json": shapes["val_json"],
        "data.val_images": shapes["val_images"], "data.short_side": 128, "data.long_side": 128,
        "data.max_instances": 8, "model.backbone.depth": 18, "model.backbone.width": 16,
        "model.backbone.norm": "batch_norm", "model.fpn.channels": 16, "model.head.channels": 16,
        "model.head.num_convs": 1, "model.mask_head.channels": 8, "model.mask_head.num_convs": 1,
        "model.mask_head.gt_mask_size": 32, "train.batch_size": 2, "train.warmup_steps": 1,
        "train.lr_drop_steps": [], **(overrides or {})}


def tiny_config(shapes, overrides=None):
    """``tiny_overrides`` as a config."""
    from retinamask_tf import config as C
    return C.load_config([], [f"{k}={v}" for k, v in tiny_overrides(shapes, overrides).items()])
