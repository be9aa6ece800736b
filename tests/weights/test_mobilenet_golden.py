"""torchvision's MobileNetV3 ImageNet layout imported into Keras' MobileNetV3
(``--source=torchvision_mobilenet_v3``), against features torchvision computed.

The golden files (``bench/mobilenet_parity.py --golden``): torchvision 0.29's
``mobilenet_v3_small`` with seeded random weights and batch-norm statistics, stored in
float16, and its C3 / C4 / C5 (the last activations at strides 8, 16, 32) on a random
64x96 input, computed with those float16 values. The full-size large model is checked the
same way by the benchmark (1e-6 there).
"""

import os

import numpy as np
import pytest

from retinamask_tf.modeling import factory
from retinamask_tf.weights import convert, importer, pth, sources

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "torchvision_mobilenet_v3_small")
SOURCE = sources.get("torchvision_mobilenet_v3")


@pytest.fixture(scope="module")
def golden():
    return pth.read_state_dict(GOLDEN + ".pth"), dict(np.load(GOLDEN + ".npz"))


@pytest.fixture(scope="module")
def imported(golden):
    """The golden file imported into our model (as --mode=import_weights does)."""
    return _imported(golden[0])


def _imported(state, overrides=()):
    config = importer.resolve_config(SOURCE, state, overrides=["model.num_classes=2"]
                                     + list(overrides))
    model = factory.build_model(config)
    convert.load(model, state, SOURCE)
    return model, config


def _rel(model, golden):
    ours = model.backbone(golden["input"], training=False)
    return {level: float(np.abs(ours[level].numpy() - golden[level]).max()
                         / np.abs(golden[level]).max()) for level in ("C3", "C4", "C5")}


def test_imported_features_are_torchvisions(golden, imported):
    _, features = golden
    model, config = imported
    b = config.model.backbone
    assert (b.name, b.alpha, config.model.conv_padding) == ("mobilenet_v3_small", 1.0, "symmetric")
    assert config.model.input_norm == "imagenet"
    errors = _rel(model, features)
    assert max(errors.values()) <= 1e-4, errors  # measured: ~6e-7


def test_keras_padding_is_what_the_convention_fixes(golden):
    """The same weights with Keras' bottom/right padding are far off: the import's
    conv_padding=symmetric is what makes them torchvision's."""
    state, features = golden
    model, _ = _imported(state, ["model.conv_padding=same"])
    assert _rel(model, features)["C3"] > 1e-2


def test_round_trip_and_unread_keys(golden, imported):
    state, _ = golden
    model, _ = imported
    back = convert.to_state_dict(model, SOURCE)
    assert set(back) == {k for k in state if not k.endswith("num_batches_tracked")}
    for key, value in back.items():
        np.testing.assert_array_equal(value, np.asarray(state[key], np.float32), err_msg=key)
    # An ImageNet file's classifier is not ours to read; any other stray key is named.
    convert.load(model, dict(state, **{"classifier.0.weight": np.zeros((4, 576), np.float32)}),
                 SOURCE)
    with pytest.raises(convert.WeightsError, match="features.99.block.0.0.weight"):
        convert.load(model, dict(state, **{"features.99.block.0.0.weight": np.zeros(1)}), SOURCE)


def test_other_widths_and_files_are_refused(golden):
    state, _ = golden
    narrow = dict(state)
    last = "features.11.block.3.0.weight"
    narrow[last] = np.zeros((72,) + np.asarray(state[last]).shape[1:], np.float32)
    with pytest.raises(convert.WeightsError, match=f"key {last}: 72 channels where 96"):
        importer.resolve_config(SOURCE, narrow)
    resnet_like = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    with pytest.raises(convert.WeightsError, match="not a torchvision mobilenet_v3"):
        importer.resolve_config(SOURCE, resnet_like)
