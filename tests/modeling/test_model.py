import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from retinamask_tf import config as C
from retinamask_tf.layers.detection_generator import DetectionGenerator
from retinamask_tf.layers.normalization import ImageNormalization
from retinamask_tf.layers.roi_aligner import RoIAligner
from retinamask_tf.losses.smooth_l1 import SelfAdjustingSmoothL1
from retinamask_tf.modeling import factory, resnet
from retinamask_tf.modeling.fpn import FPN
from retinamask_tf.modeling.heads import RetinaNetHead
from retinamask_tf.modeling.mask_head import MaskHead
from retinamask_tf.modeling.retinamask import RetinaMask
from retinamask_tf.ops import anchors
from retinamask_tf.training.schedule import WarmupStepSchedule

SMALL = ["data.short_side=128", "data.long_side=128", "model.backbone.depth=18",
         "model.backbone.width=8", "model.backbone.norm=batch_norm", "model.fpn.channels=16",
         "model.head.channels=16", "model.head.num_convs=1", "model.mask_head.channels=16",
         "model.mask_head.num_convs=2"]


@pytest.mark.parametrize("layer", [
    FPN(32, "c5", True, 3, 6), RetinaNetHead(7, 6, 2, 16, True, 0.02, 3, 6),
    DetectionGenerator(C.PostprocessConfig(0.1, 50, 0.5, 20), C.BoxCoderConfig((1, 1, 2, 2), 3.0)), ImageNormalization("caffe"),
    SelfAdjustingSmoothL1(0.2, 0.8, 1e-2), MaskHead(5, 3, 24, True),
    RoIAligner(7, 3, True, 2, 4, 3, 112.0)])
def test_get_config_carries_every_constructor_argument(layer):
    params = [p for p in inspect.signature(type(layer).__init__).parameters
              if p not in ("self", "kwargs")]
    config = layer.get_config()
    assert set(params) <= set(config), set(params) - set(config)
    clone = type(layer).from_config(config)
    for p in params:
        assert getattr(clone, p) == getattr(layer, p) or list(getattr(clone, p)) == list(getattr(layer, p))


def test_schedule_values_and_config():
    s = WarmupStepSchedule(0.01, 500, 1 / 3, (60000, 80000), 0.1)
    assert float(s(0)) == pytest.approx(0.01 / 3)
    assert float(s(250)) == pytest.approx(0.01 * (1 / 3 * 0.5 + 0.5))
    assert float(s(500)) == pytest.approx(0.01)
    assert float(s(60000)) == pytest.approx(0.001)
    assert float(s(80000)) == pytest.approx(0.0001)
    assert WarmupStepSchedule(**s.get_config()).get_config() == s.get_config()


@pytest.mark.parametrize("depth, c5", [(18, 512), (50, 2048)])
def test_resnet_strides_and_channels(depth, c5):
    model = resnet.build_resnet(depth, "frozen", 64)
    out = model(np.zeros((1, 64, 96, 3), np.float32))
    assert out["C3"].shape == (1, 8, 12, c5 // 4)
    assert out["C5"].shape == (1, 2, 3, c5)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and not any(l.trainable for l in bn)  # frozen


def test_resnet50_parameter_count_is_standard():
    # torchvision's resnet50 has 23,508,032 parameters without its fc layer
    # (25,557,032 total); ours adds no bias to convs, like it.
    model = resnet.build_resnet(50, "batch_norm", 64)
    assert model.count_params() == 23_508_032 + 53_120  # + BN moving mean/var (non-trainable)


def test_model_shapes_head_prior_and_round_trip():
    cfg = C.load_config([], SMALL)
    model = factory.build_model(cfg, num_classes=4)
    x = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    out = model(x)
    n = sum(model.level_counts)
    assert n == (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 9
    assert out["cls_logits"].shape == (2, n, 4) and out["box_deltas"].shape == (2, n, 4)
    bias = model.head.cls_pred.bias.numpy()
    np.testing.assert_allclose(bias, -math.log(99.0), rtol=1e-6)
    clone = RetinaMask.from_config(model.get_config())
    clone.build()
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x)["cls_logits"].numpy(), out["cls_logits"].numpy(), atol=1e-5)


def test_every_conv_starts_from_its_own_random_draw():
    # One unseeded Keras 3 initializer instance returns the same values on every call: the
    # head's eight tower convs (and the mask head's four) once started identical, unlike
    # the reference's independent N(0, 0.01) draws; a frozen export then merged the towers.
    cfg = C.load_config([], SMALL)
    model = factory.build_model(cfg, num_classes=4)
    model(np.zeros((1, 128, 128, 3), np.float32))
    kernels = [(w.path, w.numpy()) for w in model.weights if w.path.endswith("kernel")]
    assert len(kernels) > 30
    for i, (name_a, a) in enumerate(kernels):
        assert a.std() > 0, name_a
        for name_b, b in kernels[i + 1:]:
            assert a.shape != b.shape or not np.array_equal(a, b), (name_a, name_b)
    tower = [model.head.cls_convs[0].kernel.numpy(), model.head.box_convs[0].kernel.numpy()]
    np.testing.assert_allclose([t.std() for t in tower], 0.01, rtol=0.05)  # still N(0, 0.01)


def test_detect_returns_padded_boxes_in_original_pixels():
    cfg = C.load_config([], SMALL + ["postprocess.score_threshold=0.0"])
    model = factory.build_model(cfg, num_classes=3)
    x = np.zeros((1, 128, 128, 3), np.float32)
    det = model.detect(x, np.array([[64, 32, 2.0, 2.0]], np.float32))  # a 64x32 image, scaled x2
    # Score threshold 0: every candidate whose box is not empty once clipped to the 64x32
    # image (how many depends on the random weights: 97-100 seen), zeros past them.
    n = int(det["num_detections"].numpy()[0])
    assert det["boxes"].shape == (1, 100, 4) and 90 <= n <= 100
    b = det["boxes"].numpy()[0]
    assert b[:, 2].max() <= 64 + 1e-4 and b[:, 3].max() <= 32 + 1e-4 and b.min() >= 0
    assert (b[n:] == 0).all() and (b[:n, 2] > b[:n, 0]).all() and (b[:n, 3] > b[:n, 1]).all()
    s = det["scores"].numpy()[0]
    assert (np.diff(s[:n]) <= 1e-7).all() and (s[n:] == 0).all()


def test_pad_stride_32_gives_ceil_grids_on_p6_p7():
    """96x160 is a multiple of 32, not of 128: P6 and P7 (stride-2 convs) and their anchor
    grids take ceil(size / stride) cells, and the anchors line up with the head outputs."""
    cfg = C.load_config([], SMALL + ["data.pad_stride=32", "data.padded_size=[96, 160]",
                                     "model.backbone.width=16"])
    model = factory.build_model(cfg, num_classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 160, 3)).astype(np.float32)
    pyramid = model.features(x)
    want = {3: (12, 20), 4: (6, 10), 5: (3, 5), 6: (2, 3), 7: (1, 2)}
    for level, hw in want.items():
        assert tuple(pyramid[f"P{level}"].shape[1:3]) == hw == anchors.feature_size((96, 160), level)
    n = sum(h * w for h, w in want.values()) * 9
    assert sum(model.level_counts) == n and model.anchors.shape == (n, 4)
    assert model.head(pyramid)["cls_logits"].shape == (2, n, 3)
    labels = {"gt_boxes": tf.constant([[[10.0, 20, 60, 90], [50, 100, 96, 160]]] * 2),
              "gt_classes": tf.constant([[0, 2]] * 2), "gt_valid": tf.ones((2, 2), tf.bool),
              "gt_crowd": tf.zeros((2, 2), tf.bool), "gt_masks": tf.ones((2, 2, 32, 32), tf.uint8),
              "gt_mask_valid": tf.ones((2, 2), tf.bool)}
    losses = model.all_losses(x, labels, tf.constant([[96.0, 160, 1, 1]] * 2), training=True)
    assert all(np.isfinite(float(losses[k])) for k in ("cls_loss", "box_loss", "mask_loss"))
    assert float(losses["num_positives"]) > 0
    det = model.detect(x, tf.constant([[96.0, 160, 1, 1]] * 2))
    assert det["boxes"].shape == (2, 100, 4)


def test_num_classes_is_never_hard_coded():
    cfg = C.load_config([], SMALL)
    for k in (1, 3, 91):
        model = factory.build_model(cfg, num_classes=k)
        assert model.head.cls_pred.kernel.shape[-1] == 9 * k
    with pytest.raises(ValueError, match="num_classes"):
        factory.build_model(cfg)


def _graph_params(fn, *args):
    """Parameters a traced function reads (its captured variables)."""
    concrete = tf.function(fn).get_concrete_function(*args)
    return sum(int(np.prod(v.shape)) for v in concrete.variables)


def test_detection_graph_is_exactly_retinanet_with_or_without_mask_head():
    x = tf.zeros((1, 128, 128, 3))
    info = tf.constant([[128.0, 128.0, 1.0, 1.0]])
    with_mask = factory.build_model(C.load_config([], SMALL), num_classes=3)
    without = factory.build_model(C.load_config([], SMALL + ["model.mask_head.enabled=false"]),
                                  num_classes=3)
    assert with_mask.has_masks and not without.has_masks
    det_only = _graph_params(lambda a, b: with_mask.detect(a, b, with_masks=False), x, info)
    assert det_only == _graph_params(lambda a, b: without.detect(a, b), x, info)
    # Everything but the loss state (running mean/var of the self-adjusting smooth L1).
    assert det_only == without.count_params() - 8 == without.count_params() - sum(
        int(np.prod(v.shape)) for v in without.box_loss.weights)
    mask_params = with_mask.mask_branch.count_params()
    assert with_mask.count_params() == without.count_params() + mask_params > det_only
    assert _graph_params(lambda a, b: with_mask.detect(a, b), x, info) == det_only + mask_params


def test_detect_with_masks_shapes_and_round_trip():
    cfg = C.load_config([], SMALL + ["postprocess.score_threshold=0.0", "model.mask_head.num_masks=7"])
    model = factory.build_model(cfg, num_classes=3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    info = np.array([[128, 128, 1.0, 1.0], [64, 100, 1.28, 1.28]], np.float32)
    det = model.detect(x, info)
    assert det["masks"].shape == (2, 7, 28, 28) and det["boxes"].shape == (2, 100, 4)
    m = det["masks"].numpy()
    assert (m >= 0).all() and (m <= 1).all()
    clone = RetinaMask.from_config(model.get_config())
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.detect(x, info)["masks"].numpy(), m, atol=1e-5)


def _mask_labels():
    boxes = np.array([[[10, 10, 60, 50], [70, 20, 120, 100], [0, 0, 0, 0]]], np.float32)
    masks = np.zeros((1, 3, 32, 32), np.uint8)
    masks[0, :2, 8:24, 8:24] = 1
    return {"gt_boxes": tf.constant(boxes), "gt_classes": tf.constant([[0, 2, 0]]),
            "gt_valid": tf.constant([[True, True, False]]),
            "gt_crowd": tf.constant([[False, False, False]]), "gt_masks": tf.constant(masks),
            "gt_mask_valid": tf.constant([[True, True, False]])}


@pytest.mark.parametrize("train_detections,max_rois,want", [(0, None, 2), (100, None, 2), (7, 1, 1)])
def test_mask_rois_count(train_detections, max_rois, want):
    """GT-only RoIs (train_detections 0), GT + detections, and a positives-first cap."""
    # Score threshold 0.999: no detection of the untrained model passes, the GT rows are the
    # positives (the detections' own contribution is covered by test_training_rois_golden).
    cfg = C.load_config([], SMALL + [f"model.mask_head.train_detections={train_detections}",
                                     f"model.mask_head.max_train_rois={max_rois or 'null'}",
                                     "postprocess.score_threshold=0.999"])
    model = factory.build_model(cfg, num_classes=3)
    images = tf.zeros((1, 128, 128, 3))
    out = model.all_losses(images, _mask_labels(), tf.constant([[128.0, 128, 1, 1]]))
    assert float(out["num_mask_rois"]) == want
    assert float(out["mask_rois_dropped"]) == 2 - want
    assert np.isfinite(float(out["mask_loss"])) and float(out["mask_loss"]) > 0


def test_mask_head_runs_on_positive_slots_only_with_the_same_loss(monkeypatch):
    """Without XLA the mask head runs on each image's slots cut to the batch's largest
    positive count; the loss and its gradients are those of running it on every slot."""
    from retinamask_tf.ops import proposals
    cfg = C.load_config([], SMALL + ["model.mask_head.train_detections=5",
                                     "postprocess.score_threshold=0.0"])
    keras.utils.set_random_seed(0)  # whether a random detection matches a GT box depends on it
    model = factory.build_model(cfg, num_classes=3)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)), tf.float32)
    labels, info = _mask_labels(), tf.constant([[128.0, 128, 1, 1]])

    def run():  # a tf.function: TF 2.21's eager Conv2DBackpropFilter corrupted the heap here
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                out = model.all_losses(images, labels, info, training=True)
            return out, tape.gradient(out["mask_loss"], model.mask_branch.trainable_variables)

        out, grads = step()
        return out, [g.numpy() for g in grads]

    trimmed, trimmed_grads = run()
    monkeypatch.setattr(proposals, "trim_to_positives", lambda r, p, m: (r, p, m))
    full, full_grads = run()
    # Batch of one: the slots computed are its positives (the two valid GT rows, plus any
    # detection of the random model at IoU >= 0.5 with one), against every GT row + every
    # detection slot without the trim.
    positives = float(trimmed["num_mask_rois"])
    assert positives >= 2 and float(full["num_mask_rois"]) == positives
    assert float(trimmed["mask_rois_computed"]) == positives
    assert float(full["mask_rois_computed"]) == 3 + 5
    np.testing.assert_allclose(float(trimmed["mask_loss"]), float(full["mask_loss"]), rtol=1e-6)
    for a, b in zip(trimmed_grads, full_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("extra", [[], ["model.fpn.group_norm=true", "model.head.group_norm=true",
                                        "model.mask_head.group_norm=true"]])
def test_model_only_checkpoint_restores_every_variable(tmp_path, extra):
    """tf.train.Checkpoint(model=...) alone (what export and eval use) holds every weight,
    including layers kept in lists and dicts."""
    cfg = C.load_config([], SMALL + extra)
    a = factory.build_model(cfg, num_classes=3)
    b = factory.build_model(cfg, num_classes=3)
    for v in a.weights:
        v.assign(tf.random.normal(v.shape) if v.dtype == tf.float32 else v)
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    status = tf.train.Checkpoint(model=b).restore(path)
    status.assert_existing_objects_matched()
    assert len(a.weights) == len(b.weights) == len({id(v) for v in a.weights})
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
