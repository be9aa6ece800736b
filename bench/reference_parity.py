"""Whole-model parity with torchvision's RetinaNet: the same weights, the same input.

  python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
  python bench/reference_parity.py --torch_python /tmp/torchvenv/bin/python \
      [--sources torchvision_retinanet,torchvision_retinanet_v2] [--size 512x640]
      [--image path.jpg] [--fixtures_out DIR]

For each source a torch process (the benchmark-only venv: torch is never a dependency of
the package) builds torchvision's model with seeded random weights (every parameter and
buffer drawn, so that no layer is an identity), saves its state dict with ``torch.save``
in the layout of the published checkpoint, and records, for one image already resized to
``--size`` and normalised as torchvision does, its backbone C3-C5, FPN P3-P7, class logits
and box deltas of every anchor, the anchors, and the detections after its own
post-processing. This process then imports that file with ``--mode=import_weights``'s
converter (91 class channels kept, so that every torchvision output has a counterpart),
runs our model on the same pixels and reports per output the max abs difference and the
relative one (max abs difference / max abs value), and for detections the share of
torchvision's detections that ours reproduces (same class, score within 1e-5, box within
0.01 px), matched within equal-score groups. Writes ``bench/results/reference_parity.json``
and ``.md``.

``--fixtures_out`` also writes the small golden fixtures the CI tests use (narrow networks
on 64x64 inputs, see tests/weights/test_golden.py).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import write_results  # noqa: E402

TARGET_REL = 1e-4
TARGET_BOX_PX = 0.01
TARGET_MATCH = 0.99


# ---------------------------------------------------------------------------- torch side

def randomise(model, seed):
    """Every float parameter/buffer drawn: convs ~ N(0, 1/fan_in), biases ~ N(0, 0.1),
    norm scales ~ U(0.8, 1.2), running means ~ N(0, 0.1), variances ~ U(0.5, 1.5); class
    logits' bias around -3 so that scores spread over 0.01..0.5."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.dtype.is_floating_point or "anchor" in name:  # anchors are no weights
                continue
            if name.endswith("running_var"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("running_mean"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name.endswith("cls_logits.bias"):
                p.copy_(-3.0 + 0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("weight"):  # norm scales
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _v1_file_keys(state):
    """The key spelling of torchvision's published v1 checkpoint (retinanet_resnet50_fpn_coco-
    eeacb38b.pth): heads as ``conv.{2i}``, FPN blocks without the inner ``.0``."""
    import re
    out = {}
    for k, v in state.items():
        k = re.sub(r"(head\.\w+_head\.conv)\.(\d+)\.0\.", lambda m: f"{m.group(1)}.{2 * int(m.group(2))}.", k)
        k = re.sub(r"(fpn\.(inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        out[k] = v
    return out


def coco_ids():
    sys.path.insert(0, os.path.join(REPO, "retinamask_tf", "weights"))
    from coco_classes import COCO_IDS  # NumPy-free module, importable without TF
    return COCO_IDS


def torch_keys(args):
    """The key names and shapes of torchvision's models (v1 in its published file's
    spelling) as gzipped JSON: the fixture tests/weights/test_convert.py checks against."""
    import gzip

    import torchvision
    tv = torchvision.models.detection
    out = {"torchvision_retinanet": _v1_file_keys(
        tv.retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict()),
        "torchvision_retinanet_v2": tv.retinanet_resnet50_fpn_v2(
            weights=None, weights_backbone=None).state_dict()}
    for depth in (18, 50, 101):
        out[f"torchvision_resnet{depth}"] = getattr(torchvision.models, f"resnet{depth}")(
            weights=None).state_dict()
    shapes = {name: {k: list(v.shape) for k, v in state.items()} for name, state in out.items()}
    with gzip.open(args.keys_out, "wt") as f:
        json.dump(shapes, f, separators=(",", ":"))
    print(json.dumps({"written": args.keys_out}))


def torch_end_to_end(args):
    """torchvision's whole model (its transform included, resizing to the image's own size)
    on the images in ``work/e2e_images.npy``; detections per image."""
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    images = np.load(os.path.join(args.work, "e2e_images.npy"))
    h, w = images.shape[1:3]
    model = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=args.num_classes,
        min_size=min(h, w), max_size=max(h, w))
    model.load_state_dict(torch.load(os.path.join(args.work, "weights.pth"), weights_only=True))
    model.eval()
    out = {}
    with torch.no_grad():
        for i, image in enumerate(images):
            x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
            det = model([x])[0]
            out[f"boxes_{i}"] = det["boxes"].numpy()
            out[f"scores_{i}"] = det["scores"].numpy()
            out[f"labels_{i}"] = det["labels"].numpy()
    np.savez(os.path.join(args.work, "torch_e2e.npz"), **out)
    print(json.dumps({"images": len(images)}))


def torch_side(args):
    import collections

    import torch
    import torchvision
    from torchvision.models.detection.image_list import ImageList

    torch.set_num_threads(args.threads)
    if args.source == "retinamask" and args.training:
        import released_reference
        image = np.load(os.path.join(args.work, "image.npy"))
        gt = np.load(os.path.join(args.work, "gt.npz"))
        out = released_reference.reference_training(
            args.reference_repo, image, gt["boxes"], gt["labels"], randomise, args.seed,
            os.path.join(args.work, "weights_train.pth"))
        np.savez(os.path.join(args.work, "torch_training.npz"), **out)
        print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__}))
        return
    if args.source == "retinamask":
        import released_reference
        image = np.load(os.path.join(args.work, "image.npy"))
        out = released_reference.reference_outputs(args.reference_repo, image, randomise,
                                                   args.seed, os.path.join(args.work, "weights.pth"),
                                                   narrow=args.narrow)
        np.savez(os.path.join(args.work, "torch_outputs.npz"), **out)
        print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                          "num_detections": int(len(out["det_scores"]))}))
        return
    tv = torchvision.models.detection
    ctor = {"torchvision_retinanet": tv.retinanet_resnet50_fpn,
            "torchvision_retinanet_v2": tv.retinanet_resnet50_fpn_v2}[args.source]
    kwargs = {}
    if args.narrow:  # golden fixtures: torchvision's classes at 1/8 width (ResNet-18 of
        # width 8, 16-channel FPN and heads): the same code paths in a file of < 1 MB
        from functools import partial

        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.models.detection.retinanet import RetinaNetHead
        from torchvision.models.resnet import BasicBlock, ResNet
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7
        from torchvision.ops.misc import FrozenBatchNorm2d

        width, channels = 8, 16
        body = ResNet(BasicBlock, [2, 2, 2, 2], norm_layer=FrozenBatchNorm2d)
        body.inplanes = width
        body.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
        body.bn1 = FrozenBatchNorm2d(width)
        body.layer1 = body._make_layer(BasicBlock, width, 2)
        body.layer2 = body._make_layer(BasicBlock, 2 * width, 2, stride=2)
        body.layer3 = body._make_layer(BasicBlock, 4 * width, 2, stride=2)
        body.layer4 = body._make_layer(BasicBlock, 8 * width, 2, stride=2)
        v2 = args.source.endswith("v2")
        backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"},
                                   [2 * width, 4 * width, 8 * width], channels,
                                   extra_blocks=LastLevelP6P7(8 * width if v2 else channels,
                                                              channels))
        anchor_gen = tv.retinanet._default_anchorgen()
        head = RetinaNetHead(channels, anchor_gen.num_anchors_per_location()[0], args.num_classes,
                             norm_layer=partial(torch.nn.GroupNorm, channels) if v2 else None)
        model = tv.RetinaNet(backbone, args.num_classes, anchor_generator=anchor_gen, head=head)
    else:
        model = ctor(weights=None, weights_backbone=None, num_classes=args.num_classes, **kwargs)
    model.eval()
    randomise(model, args.seed)
    if args.coco80:  # the 11 channels that are no COCO category never score (as trained)
        keep = set(coco_ids())
        dead = [c for c in range(args.num_classes) if c not in keep]
        a = model.head.classification_head.num_anchors
        with torch.no_grad():
            bias = model.head.classification_head.cls_logits.bias.view(a, args.num_classes)
            bias[:, dead] = -100.0
    state = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    if args.source == "torchvision_retinanet" and not args.narrow:
        state = collections.OrderedDict(_v1_file_keys(state))
        # the published file's spelling must load into torchvision's model as it is
        check = ctor(weights=None, weights_backbone=None, num_classes=args.num_classes)
        check.load_state_dict(state)
    torch.save(state, os.path.join(args.work, "weights.pth"))

    image = np.load(os.path.join(args.work, "image.npy"))  # [H, W, 3] uint8 RGB
    h, w = image.shape[:2]
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = ((x - mean) / std)[None]  # GeneralizedRCNNTransform.normalize
    out = {}
    with torch.no_grad():
        body = model.backbone.body(x)
        for i, (k, v) in enumerate(body.items()):
            out[f"C{i + 3}"] = v.permute(0, 2, 3, 1).numpy()
        pyramid = model.backbone.fpn(body)
        features = list(pyramid.values())
        for i, v in enumerate(features):
            out[f"P{i + 3}"] = v.permute(0, 2, 3, 1).numpy()
        head = model.head(features)
        out["cls_logits"] = head["cls_logits"][0].numpy()  # [sum HWA, K] (y, x, a) per level
        out["box_deltas"] = head["bbox_regression"][0].numpy()  # (dx, dy, dw, dh)
        images = ImageList(x, [(h, w)])
        anchors = model.anchor_generator(images, features)
        out["anchors_xyxy"] = anchors[0].numpy()
        per_level = [f.shape[2] * f.shape[3] for f in features]
        a = head["cls_logits"].shape[1] // sum(per_level)
        per_level = [n * a for n in per_level]
        split_head = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
        split_anchors = [list(t.split(per_level)) for t in anchors]
        det = model.postprocess_detections(split_head, split_anchors, images.image_sizes)[0]
        out["det_boxes_xyxy"] = det["boxes"].numpy()
        out["det_scores"] = det["scores"].numpy()
        out["det_labels"] = det["labels"].numpy()
    out["level_hw"] = np.array([[f.shape[2], f.shape[3]] for f in features])
    np.savez(os.path.join(args.work, "torch_outputs.npz"), **out)
    print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                      "num_detections": int(len(det["scores"]))}))


# ---------------------------------------------------------------------------- our side

def _our_model(source_name, state, num_classes, image_size, narrow=False, overrides=()):
    from retinamask_tf import config as config_lib
    from retinamask_tf.modeling import factory
    from retinamask_tf.weights import convert, importer, sources

    source = sources.get(source_name)
    extra = [f"model.num_classes={num_classes}"]
    if not source.has_masks:
        extra.append("model.mask_head.enabled=false")
    if narrow:
        extra += ["model.fpn.channels=16", "model.head.channels=16", "model.backbone.width=8",
                  "model.mask_head.channels=16"]
    config = importer.resolve_config(source, state, (), extra + list(overrides))
    config = config_lib.replace(config, **{"data.padded_size": tuple(image_size)})
    model = factory.build_model(config, image_size=tuple(image_size))
    if source.has_masks:  # the released code: channel k is COCO class k, masks k + 1
        convert.load(model, state, source, list(range(num_classes)),
                     list(range(1, num_classes + 1)))
    else:
        convert.load(model, state, source, class_map=list(range(num_classes)))
    return model, config


def reorder_torch_head(t, level_hw, num_scales, num_ratios, kind):
    """torchvision's per-anchor outputs [(level, y, x, a_src), C] in our anchor order
    (a = scale * R + ratio) and, for box deltas, our (dy, dx, dh, dw) order."""
    a = num_scales * num_ratios
    order = np.array([r * num_scales + s for s in range(num_scales) for r in range(num_ratios)])
    parts, start = [], 0
    for h, w in level_hw:
        n = h * w * a
        block = t[start:start + n].reshape(h * w, a, -1)[:, order]
        if kind == "box":
            block = block[..., [1, 0, 3, 2]]
        parts.append(block.reshape(n, -1))
        start += n
    return np.concatenate(parts)


def _diff(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return {"shape_ours": list(ours.shape), "shape_theirs": list(theirs.shape), "ok": False}
    d = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    rel = d / max(scale, 1e-12)
    return {"max_abs": d, "rel": rel, "scale": scale, "ok": rel <= TARGET_REL}


def match_detections(ours, theirs, score_tol=1e-5, box_tol=TARGET_BOX_PX):
    """Share of ``theirs`` detections (boxes yxyx, scores, classes) found in ``ours`` with
    the same class, a score within ``score_tol`` and every coordinate within ``box_tol``;
    each of ours is used once (so equal-score groups may come in any order)."""
    ob, os_, oc = ours
    tb, ts, tc = theirs
    used = np.zeros(len(os_), bool)
    found, worst = 0, 0.0
    for i in range(len(ts)):
        cand = np.where(~used & (oc == tc[i]) & (np.abs(os_ - ts[i]) <= score_tol))[0]
        if cand.size:
            err = np.max(np.abs(ob[cand] - tb[i][None]), axis=1)
            j = cand[np.argmin(err)]
            if err.min() <= box_tol:
                used[j] = True
                found += 1
                worst = max(worst, float(err.min()))
    return {"theirs": int(len(ts)), "ours": int(len(os_)), "matched": found,
            "share": found / max(len(ts), 1), "max_box_err_px": worst}


def tf_side(source_name, work, num_classes, narrow=False, overrides=()):
    import tensorflow as tf

    from retinamask_tf.weights import pth

    state = pth.read_state_dict(os.path.join(work, "weights.pth"))
    ref = dict(np.load(os.path.join(work, "torch_outputs.npz")))
    image = np.load(os.path.join(work, "image.npy"))
    h, w = image.shape[:2]
    model, config = _our_model(source_name, state, num_classes, (h, w), narrow, overrides)
    images = tf.constant(image[None], tf.float32)
    c = model.backbone(model.normalize(images))
    p = model.fpn(c)
    head = model.head(p)
    a = config.anchors
    rows = {}
    for k in ("C3", "C4", "C5"):
        rows[k] = _diff(c[k].numpy(), ref[k])
    for k in ("P3", "P4", "P5", "P6", "P7"):
        rows[k] = _diff(p[k].numpy(), ref[k])
    level_hw = ref["level_hw"]
    rows["cls_logits"] = _diff(head["cls_logits"][0].numpy(), reorder_torch_head(
        ref["cls_logits"], level_hw, a.num_scales, len(a.aspect_ratios), "cls"))
    rows["box_deltas"] = _diff(head["box_deltas"][0].numpy(), reorder_torch_head(
        ref["box_deltas"], level_hw, a.num_scales, len(a.aspect_ratios), "box"))
    anchors_ref = reorder_torch_head(ref["anchors_xyxy"], level_hw, a.num_scales,
                                     len(a.aspect_ratios), "cls")[:, [1, 0, 3, 2]]
    rows["anchors"] = _diff(model.anchors, anchors_ref)
    # exact for torchvision; the released "+1" boxes are moved to continuous ones (x2 + 1) in
    # float32 here, which can round differently by an ulp of the coordinate (< 1e-3 px)
    rows["anchors"]["ok"] = rows["anchors"]["max_abs"] <= 1e-3
    det = model.detect(images, tf.constant([[h, w, 1.0, 1.0]], tf.float32), with_masks=False)
    n = int(det["num_detections"][0])
    ours = (det["boxes"][0, :n].numpy(), det["scores"][0, :n].numpy(),
            det["classes"][0, :n].numpy())
    theirs = (ref["det_boxes_xyxy"][:, [1, 0, 3, 2]], ref["det_scores"], ref["det_labels"])
    m = match_detections(ours, theirs)
    m["ok"] = m["share"] >= TARGET_MATCH and m["ours"] == m["theirs"]
    rows["detections"] = m
    if "det_masks" in ref:  # the mask head on the reference's own detections
        n = len(ref["det_masks"])
        boxes = tf.constant(ref["det_boxes_xyxy"][None, :n][..., [1, 0, 3, 2]], tf.float32)
        classes = tf.constant(ref["det_labels"][None, :n], tf.int32)
        logits = model.mask_branch.logits(p, boxes, False)
        from retinamask_tf.ops import masks as mask_ops
        probs = tf.sigmoid(mask_ops.select_class(logits, classes))[0].numpy()
        rows["masks"] = _diff(probs, ref["det_masks"])
    return rows


TARGET_LOSS_REL = 1e-5
TARGET_BETA_ABS = 1e-6
TARGET_GRAD = 1e-4


def training_parity(args, work):
    """The released code's RetinaNet losses, beta state and gradients against ours."""
    import tensorflow as tf

    from retinamask_tf.weights import convert, pth, sources

    image = np.load(os.path.join(work, "image.npy"))
    h, w = image.shape[:2]
    rng = np.random.default_rng(args.seed + 1)
    size = rng.uniform(24, 220, (8, 2))
    corner = rng.uniform(0, 1, (8, 2)) * (np.array([w, h]) - size)
    boxes = np.concatenate([corner, corner + size], 1).astype(np.float32)  # xyxy continuous
    labels = rng.integers(0, 80, 8)
    np.savez(os.path.join(work, "gt.npz"), boxes=boxes, labels=labels)
    cmd = [args.torch_python, os.path.abspath(__file__), "--side", "torch", "--source",
           "retinamask", "--training", "--work", work, "--seed", str(args.seed), "--threads",
           str(args.threads), "--reference_repo", os.path.abspath(args.reference_repo)]
    if not (args.reuse and os.path.exists(os.path.join(work, "torch_training.npz"))):
        print("[parity] retinamask training: torch side ...", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit("torch side of the training check failed")
    ref = dict(np.load(os.path.join(work, "torch_training.npz")))
    state = pth.read_state_dict(os.path.join(work, "weights_train.pth"))
    source = sources.get("retinamask")
    model, _ = _our_model("retinamask", state, 80, (h, w), overrides=["model.mask_head.enabled=false"])
    images = tf.constant(image[None], tf.float32)
    labels_in = {"gt_boxes": tf.constant(boxes[None][..., [1, 0, 3, 2]]),
                 "gt_classes": tf.constant(labels[None], tf.int32),
                 "gt_valid": tf.ones((1, 8), tf.bool), "gt_crowd": tf.zeros((1, 8), tf.bool)}
    rows, steps = {}, 5
    for step in range(steps):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(model(images, training=True), labels_in, training=True)
            total = losses["cls_loss"] + losses["box_loss"]
        if step == 0:
            grads = tape.gradient(total, model.trainable_variables)
        for name in ("cls_loss", "box_loss"):
            ours, theirs = float(losses[name]), float(ref[f"{name}/{step}"])
            rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
            rows[f"{name} step {step + 1}"] = {"ours": ours, "theirs": theirs, "max_abs":
                                               abs(ours - theirs), "rel": rel,
                                               "ok": rel <= TARGET_LOSS_REL}
        for name, var in (("running_mean", model.box_loss.running_mean),
                          ("running_var", model.box_loss.running_var)):
            # ours per (dy, dx, dh, dw), the released code's per (dx, dy, dw, dh)
            d = float(np.max(np.abs(var.numpy()[[1, 0, 3, 2]] - ref[f"{name}/{step}"])))
            rows[f"beta {name} step {step + 1}"] = {"max_abs": d, "rel": d,
                                                    "ok": d <= TARGET_BETA_ABS}
    # gradients in the source's layout: a model whose trainable variables hold them
    holder, _ = _our_model("retinamask", state, 80, (h, w), overrides=["model.mask_head.enabled=false"])
    by_path = {v.path: g for v, g in zip(model.trainable_variables, grads)}
    trainable_paths = set(by_path)
    for v in holder.trainable_variables:
        v.assign(by_path[v.path])
    ours = convert.to_state_dict(holder, source, list(range(80)), 80)
    np.savez(os.path.join(work, "our_gradients.npz"), **ours)
    worst, compared, missing, worst_key, errors = 0.0, 0, [], None, {}
    torch32_worst = 0.0  # the reference's own float32 error, for scale
    for key, g in ours.items():
        theirs = ref.get(f"grad64/{key}")  # the exact (float64) gradient
        if theirs is None:
            continue  # frozen in the released code (stem, stage 2, FrozenBN)
        torch32_worst = max(torch32_worst, float(np.linalg.norm(ref[f"grad/{key}"] - theirs)
                                                 / max(np.linalg.norm(theirs), 1e-30)))
        slot_var = _variable_of(holder, source, key)
        if slot_var is None or slot_var.path not in trainable_paths:
            missing.append(key)
            continue
        err = float(np.linalg.norm(g - theirs) / max(np.linalg.norm(theirs), 1e-30))
        errors[key] = err
        if err > worst:
            worst, worst_key = err, key
        compared += 1
    rows[f"gradients ({compared} parameters) vs float64 reference; the reference in "
         f"float32: {torch32_worst:.2g}"] = {"compared": compared, "max_abs": worst, "rel": worst, "worst": worst_key,
                         "largest": sorted(errors.items(), key=lambda kv: -kv[1])[:8],
                         "not_trainable_here": missing, "ok": worst <= TARGET_GRAD and compared > 0}
    return rows


def _variable_of(model, source, key):
    from retinamask_tf.weights import convert
    for slot in convert.layout(model, source):
        if key.startswith(slot.key + "."):
            suffix = key[len(slot.key) + 1:]
            layer = slot.layer
            return {"weight": getattr(layer, "kernel", getattr(layer, "gamma", None)),
                    "bias": getattr(layer, "bias", getattr(layer, "beta", None))}.get(suffix)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", choices=["main", "torch", "torch_e2e", "torch_keys"], default="main")
    ap.add_argument("--keys_out", default=None, help="--side torch_keys (run with the torch "
                    "venv's python): write tests/weights/golden/torchvision_keys.json.gz")
    ap.add_argument("--sources", default="torchvision_retinanet,torchvision_retinanet_v2")
    ap.add_argument("--source")
    ap.add_argument("--reference_repo", default=None, help="a checkout of the released "
                    "RetinaMask code (github.com/chengyangfu/retinamask), for --sources retinamask")
    ap.add_argument("--torch_python", default=sys.executable)
    ap.add_argument("--size", default="512x640", help="HxW, multiples of 128")
    ap.add_argument("--image", default=None, help="an image (default: a coco128 image if "
                    "RETINAMASK_TEST_DATA is set, else a seeded smooth random image)")
    ap.add_argument("--num_classes", type=int, default=None,
                    help="default: 91 for torchvision (every output), 80 for the released code")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--narrow", action="store_true", help="the golden fixtures' thin networks")
    ap.add_argument("--fixtures_out", default=None, help="with --narrow: write each source's "
                    "weights, input and torchvision outputs here (tests/weights/golden)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--coco80", action="store_true", help="torch side: the 11 class channels "
                    "that are no COCO category never score (as in the trained checkpoint), so "
                    "that an 80-class import computes the same detections")
    ap.add_argument("--saved_model", default=None, help="compare this SavedModel (exported from "
                    "an import of --work's weights.pth) end to end with torchvision on "
                    "--e2e_images coco128 images resized to --size")
    ap.add_argument("--e2e_images", type=int, default=8)
    ap.add_argument("--override", action="append", default=[], help="key=value on our side "
                    "only (measures what one convention is worth); results go to "
                    "reference_parity_override.*")
    ap.add_argument("--reuse", action="store_true", help="keep --work's torch outputs")
    ap.add_argument("--name", default=None, help="results file name (default reference_parity)")
    ap.add_argument("--training", action="store_true", help="retinamask: also compare the "
                    "detection losses, the self-adjusting beta state over 5 steps and every "
                    "parameter's gradient on one image with 8 seeded GT boxes (mask head off)")
    args = ap.parse_args()
    if args.side == "torch":
        return torch_side(args)
    if args.side == "torch_e2e":
        return torch_end_to_end(args)
    if args.side == "torch_keys":
        return torch_keys(args)
    if args.saved_model:
        return saved_model_parity(args)

    h, w = (int(v) for v in args.size.split("x"))
    image = input_image(args.image, h, w, args.seed)
    result = {"size": [h, w], "machine": platform.processor() or platform.machine(),
              "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on)"),
              "targets": {"rel": TARGET_REL, "box_px": TARGET_BOX_PX, "match": TARGET_MATCH},
              "sources": {}}
    lines = [f"# Parity with the reference implementations ({h}x{w} input, seeded random "
             "weights)", "",
             "| source | output | max abs diff | relative | within target |", "|---|---|---|---|---|"]
    all_ok = True
    for source in args.sources.split(","):
        work = args.work or tempfile.mkdtemp(prefix=f"parity_{source}_")
        os.makedirs(work, exist_ok=True)
        np.save(os.path.join(work, "image.npy"), image)
        num_classes = args.num_classes or (80 if source == "retinamask" else 91)
        if args.narrow and source == "retinamask":
            num_classes = 5  # its narrow config (released_reference.NARROW)
        cmd = [args.torch_python, os.path.abspath(__file__), "--side", "torch", "--source", source,
               "--work", work, "--num_classes", str(num_classes), "--seed", str(args.seed),
               "--threads", str(args.threads)] + (["--narrow"] if args.narrow else []) + (
                   ["--reference_repo", os.path.abspath(args.reference_repo)]
                   if args.reference_repo else []) + (
                   ["--coco80"] if args.coco80 else [])
        print(f"[parity] {source}: torch side ...", flush=True)
        if args.reuse and os.path.exists(os.path.join(work, "torch_outputs.npz")):
            info = {"reused": work}
        else:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"torch side of {source} failed")
            info = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"[parity] {source}: ours ...", flush=True)
        rows = tf_side(source, work, num_classes, args.narrow, args.override)
        if args.fixtures_out:
            _write_fixture(args.fixtures_out, source, work)
        if args.training and source == "retinamask":
            rows.update(training_parity(args, work))
        result["sources"][source] = {"torch": info, "rows": rows}
        for name, r in rows.items():
            all_ok &= bool(r["ok"])
            if name == "detections":
                lines.append(f"| {source} | detections ({r['theirs']} theirs, {r['ours']} ours) | "
                             f"box {r['max_box_err_px']:.2g} px | {r['share'] * 100:.2f}% matched | "
                             f"{'yes' if r['ok'] else 'NO'} |")
            else:
                lines.append(f"| {source} | {name} | {r.get('max_abs', float('nan')):.3g} | "
                             f"{r.get('rel', float('nan')):.3g} | {'yes' if r['ok'] else 'NO'} |")
    result["all_within_targets"] = all_ok
    lines += ["", f"Targets: features and head outputs within {TARGET_REL:g} relative (max abs "
              f"diff / max abs value); detections: >= {TARGET_MATCH:.0%} of the reference's "
              f"found with the same class, score within 1e-5 and box within {TARGET_BOX_PX} px. "
              f"torch {info.get('torch')}, torchvision {info.get('torchvision')}."]
    if args.override:
        result["overrides"] = args.override
        lines.insert(1, f"\nOurs with {' '.join(args.override)} (the source's convention undone).")
    if args.training:
        lines.append(f"Training: losses within {TARGET_LOSS_REL:g} relative, beta state within "
                     f"{TARGET_BETA_ABS:g}, gradients within {TARGET_GRAD:g} (norm of the "
                     "difference / norm), per parameter the released code trains (stem and "
                     "stage 2 are frozen there). TF_ENABLE_ONEDNN_OPTS="
                     f"{result['TF_ENABLE_ONEDNN_OPTS']}.")
    name = args.name or ("reference_parity_override" if args.override else "reference_parity")
    write_results(args.out, name, result, lines)
    return 0 if all_ok else 1


def _write_fixture(folder, source, work):
    """weights.pth (float32) and one .npz of the input and torchvision's outputs, float32."""
    import shutil
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(work, "weights.pth"), os.path.join(folder, f"{source}.pth"))
    ref = dict(np.load(os.path.join(work, "torch_outputs.npz")))
    ref["image"] = np.load(os.path.join(work, "image.npy"))
    if source == "torchvision_retinanet_v2":  # the v1 fixture checks the same backbone/FPN
        ref = {k: v for k, v in ref.items() if k[0] not in "CP" or k[1:] not in "34567"}
    np.savez_compressed(os.path.join(folder, f"{source}.npz"), **ref)


def saved_model_parity(args):
    """The SavedModel's serving_default against torchvision's whole model on the same
    uint8 images (already at --size: both resize by 1.0)."""
    import tensorflow as tf
    from PIL import Image

    h, w = (int(v) for v in args.size.split("x"))
    folder = os.path.join(os.environ["RETINAMASK_TEST_DATA"], "coco128", "images")
    names = sorted(os.listdir(folder))[:args.e2e_images]
    images = np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")
                                  .resize((w, h), Image.BILINEAR)) for n in names])
    np.save(os.path.join(args.work, "e2e_images.npy"), images)
    cmd = [args.torch_python, os.path.abspath(__file__), "--side", "torch_e2e", "--work", args.work,
           "--num_classes", str(args.num_classes or 91), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit("torch side failed")
    ref = dict(np.load(os.path.join(args.work, "torch_e2e.npz")))
    serve = tf.saved_model.load(args.saved_model).signatures["serving_default"]
    rows, total, matched, worst, counts_ok = [], 0, 0, 0.0, True
    for i, name in enumerate(names):
        out = serve(images=tf.constant(images[i:i + 1]))
        n = int(out["num_detections"][0])
        ours = (out["detection_boxes"][0, :n].numpy(), out["detection_scores"][0, :n].numpy(),
                out["detection_classes"][0, :n].numpy())
        theirs = (ref[f"boxes_{i}"][:, [1, 0, 3, 2]], ref[f"scores_{i}"], ref[f"labels_{i}"])
        m = match_detections(ours, theirs)
        rows.append({"image": name, **m})
        total += m["theirs"]
        matched += m["matched"]
        worst = max(worst, m["max_box_err_px"])
        counts_ok &= m["ours"] == m["theirs"]
    share = matched / max(total, 1)
    ok = share >= TARGET_MATCH and counts_ok
    result = {"saved_model": os.path.abspath(args.saved_model), "size": [h, w], "images": rows,
              "share": share, "max_box_err_px": worst, "ok": ok}
    lines = [f"# SavedModel vs torchvision end to end ({len(names)} coco128 images at {h}x{w})", "",
             "| image | torchvision | ours | matched | max box error (px) |", "|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['theirs']} | {r['ours']} | {r['share'] * 100:.2f}% | "
              f"{r['max_box_err_px']:.2g} |" for r in rows]
    lines += ["", f"All images: {matched} of {total} torchvision detections matched "
              f"({share * 100:.2f}%), worst box error {worst:.2g} px: "
              f"{'within' if ok else 'NOT within'} the target."]
    write_results(args.out, "reference_parity_saved_model", result, lines)
    return 0 if ok else 1


def input_image(path, h, w, seed):
    from PIL import Image
    if path is None:
        data = os.environ.get("RETINAMASK_TEST_DATA")
        folder = os.path.join(data, "coco128", "images") if data else None
        if folder and os.path.isdir(folder):
            path = os.path.join(folder, sorted(os.listdir(folder))[0])
    if path:
        return np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


if __name__ == "__main__":
    sys.exit(main())
