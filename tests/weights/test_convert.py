"""Converters between PyTorch state dicts and our variables, without torch: the key names
and shapes of the real checkpoints (torchvision's, recorded in golden/torchvision_keys.json.gz;
the released RetinaMask code's, from its module names), exact round trips, and errors that
name the key."""

import gzip
import json
import os

import keras
import numpy as np
import pytest

from retinamask_tf import config as C
from retinamask_tf.modeling import factory
from retinamask_tf.weights import convert, importer, sources

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
IGNORED = ("num_batches_tracked", "fc.weight", "fc.bias")


def _model(source_name, num_classes, depth=50, extra=(), seed=0):
    source = sources.get(source_name)
    overrides = list(source.conventions) + [
        f"model.num_classes={num_classes}", f"model.backbone.depth={depth}",
        "data.padded_size=[128,128]",
        f"model.mask_head.enabled={'true' if source.has_masks else 'false'}"] + list(extra)
    keras.utils.set_random_seed(seed)
    return factory.build_model(C.load_config([], overrides), image_size=(128, 128))


def _variables(model, source):
    """The variables the source's layout covers (not, e.g., the box loss's beta state)."""
    return {v.path: v.numpy() for slot in convert.layout(model, source)
            for v in slot.layer.weights}


def _randomise(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.standard_normal(v.shape).astype(np.float32)
        if "moving_variance" in v.path:
            value = 0.5 + np.abs(value)
        v.assign(value)


@pytest.fixture(scope="module")
def torchvision_keys():
    with gzip.open(os.path.join(GOLDEN, "torchvision_keys.json.gz"), "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("source_name,key_set,depth", [
    ("torchvision_retinanet", "torchvision_retinanet", 50),
    ("torchvision_retinanet_v2", "torchvision_retinanet_v2", 50),
    ("torchvision_resnet", "torchvision_resnet18", 18),
    ("torchvision_resnet", "torchvision_resnet101", 101),
])
def test_torchvision_layout_and_round_trip(torchvision_keys, source_name, key_set, depth):
    source = sources.get(source_name)
    model = _model(source_name, 91, depth)
    _randomise(model, 1)
    kwargs = dict(class_map=list(range(91)), source_classes=91) if source.detector else {}
    state = convert.to_state_dict(model, source, **kwargs)
    want = {k: tuple(s) for k, s in torchvision_keys[key_set].items() if not k.endswith(IGNORED)}
    if source_name == "torchvision_retinanet":  # the published file spells v1's old names
        state = {_v1(k): v for k, v in state.items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    other = _model(source_name, 91, depth, seed=5)
    kept = convert.load(other, state, source, class_map=list(range(91)) if source.detector else None)
    assert kept == []
    ours, theirs = _variables(model, source), _variables(other, source)
    assert len(ours) == len(want)
    for path, value in ours.items():
        np.testing.assert_array_equal(theirs[path], value, err_msg=path)


def _v1(key):
    import re
    key = re.sub(r"(head\.\w+_head\.conv)\.(\d+)\.0\.", lambda m: f"{m.group(1)}.{2 * int(m.group(2))}.", key)
    return re.sub(r"(fpn\.(inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)


def test_released_layout_and_round_trip():
    """Key names and shapes of the released R-50-FPN RetinaMask (maskrcnn-benchmark's module
    names: backbone.body.stem, layerN, fpn_innerN/fpn_layerN, top_blocks, rpn.head towers as
    Sequential(conv, relu), mask feature_extractor/predictor with 81 mask channels)."""
    source = sources.get("retinamask")
    model = _model("retinamask", 80)
    _randomise(model, 2)
    positions, mask_positions = importer.class_maps(source, *_coco())
    state = convert.to_state_dict(model, source, class_map=positions, source_classes=80,
                                  mask_class_map=mask_positions, mask_source_classes=81)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    expect = {
        "backbone.body.stem.conv1.weight": (64, 3, 7, 7),
        "backbone.body.stem.bn1.running_var": (64,),
        "backbone.body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.body.layer2.0.conv1.weight": (128, 256, 1, 1),
        "backbone.body.layer3.5.conv3.weight": (1024, 256, 1, 1),
        "backbone.body.layer4.2.bn3.bias": (2048,),
        "backbone.fpn.fpn_inner2.weight": (256, 512, 1, 1),
        "backbone.fpn.fpn_inner4.weight": (256, 2048, 1, 1),
        "backbone.fpn.fpn_layer3.weight": (256, 256, 3, 3),
        "backbone.fpn.top_blocks.p6.weight": (256, 256, 3, 3),
        "backbone.fpn.top_blocks.p7.bias": (256,),
        "rpn.head.cls_tower.0.weight": (256, 256, 3, 3),
        "rpn.head.cls_tower.6.bias": (256,),
        "rpn.head.bbox_tower.4.weight": (256, 256, 3, 3),
        "rpn.head.cls_logits.weight": (720, 256, 3, 3),
        "rpn.head.bbox_pred.weight": (36, 256, 3, 3),
        "mask.feature_extractor.mask_fcn1.weight": (256, 256, 3, 3),
        "mask.feature_extractor.mask_fcn4.bias": (256,),
        "mask.predictor.conv5_mask.weight": (256, 256, 2, 2),
        "mask.predictor.mask_fcn_logits.weight": (81, 256, 1, 1),
    }
    for key, shape in expect.items():
        assert shapes.get(key) == shape, key
    # 53 convs + 53 FrozenBN (4 tensors) in R-50, 8 FPN convs, 10 head convs, 6 mask convs
    assert len(state) == 53 + 53 * 4 + 8 * 2 + 10 * 2 + 6 * 2
    other = _model("retinamask", 80, seed=7)
    assert convert.load(other, state, source, positions, mask_positions) == []
    ours, theirs = _variables(model, source), _variables(other, source)
    assert len(ours) == len(state)
    for path, value in ours.items():
        # FrozenBN without eps in the source: gamma goes through sqrt(var + eps) / sqrt(var)
        np.testing.assert_allclose(theirs[path], value, rtol=2e-7, atol=0, err_msg=path)


def _coco():
    from retinamask_tf.weights.coco_classes import COCO_IDS, COCO_NAMES
    return list(COCO_IDS), list(COCO_NAMES)


def test_released_frozen_bn_without_eps():
    """maskrcnn-benchmark's FrozenBatchNorm2d has no eps: y = (x - m) w / sqrt(v) + b."""
    source = sources.get("retinamask")
    model = _model("retinamask", 80)
    layer = model.backbone.get_layer("stem_norm")
    state = convert.to_state_dict(model, source, list(range(80)), 80, list(range(1, 81)), 81)
    rng = np.random.default_rng(3)
    w, b = rng.uniform(0.5, 2, 64), rng.normal(size=64)
    m, v = rng.normal(size=64), rng.uniform(1e-4, 2, 64)  # small variances: eps would matter
    for suffix, value in (("weight", w), ("bias", b), ("running_mean", m), ("running_var", v)):
        state[f"backbone.body.stem.bn1.{suffix}"] = value.astype(np.float32)
    convert.load(model, state, source, list(range(80)), list(range(1, 81)))
    x = rng.normal(size=(1, 4, 4, 64)).astype(np.float32)
    want = (x - m) * w / np.sqrt(v) + b
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-5)


def test_errors_name_the_key(torchvision_keys):
    tv = sources.get("torchvision_retinanet")
    model = _model("torchvision_retinanet", 91)
    good = convert.to_state_dict(model, tv, list(range(91)), 91)
    classes = list(range(91))

    with pytest.raises(convert.WeightsError, match=r"key backbone\.body\.stem\.conv1\.weight is "
                       "missing: not a retinamask checkpoint"):
        convert.load(_model("retinamask", 80), good, sources.get("retinamask"), list(range(80)))
    missing = dict(good)
    del missing["backbone.fpn.extra_blocks.p7.bias"]
    with pytest.raises(convert.WeightsError, match=r"key backbone\.fpn\.extra_blocks\.p7\.bias is missing"):
        convert.load(model, missing, tv, classes)
    wrong = dict(good)
    wrong["backbone.body.layer2.0.conv2.weight"] = np.zeros((128, 128, 1, 1), np.float32)
    with pytest.raises(convert.WeightsError, match=r"key backbone\.body\.layer2\.0\.conv2\.weight: "
                       r"shape \(1, 1, 128, 128\) where \(3, 3, 128, 128\)"):
        convert.load(model, wrong, tv, classes)
    few = dict(good)  # a checkpoint with 20 classes, asked for COCO's category ids
    few["head.classification_head.cls_logits.weight"] = np.zeros((9 * 20, 256, 3, 3), np.float32)
    few["head.classification_head.cls_logits.bias"] = np.zeros((9 * 20,), np.float32)
    with pytest.raises(convert.WeightsError, match=r"key head\.classification_head\.cls_logits"
                       r"\.weight: 20 classes per anchor, but class channel 90 is asked for"):
        convert.load(model, few, tv, classes)
    extra = dict(good)
    extra["roi_heads.box_predictor.cls_score.weight"] = np.zeros((91, 1024), np.float32)
    with pytest.raises(convert.WeightsError, match=r"key roi_heads\.box_predictor\.cls_score\.weight "
                       "is not read by any layer"):
        convert.load(model, extra, tv, classes)
    backbone_only = {k: np.zeros(s, np.float32) for k, s in torchvision_keys["torchvision_resnet18"].items()}
    with pytest.raises(convert.WeightsError, match=r"key backbone\.body\.layer3\.0\.conv1\.weight is "
                       "missing: not a torchvision_retinanet checkpoint"):
        importer.resolve_config(tv, backbone_only)
