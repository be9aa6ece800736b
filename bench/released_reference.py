"""The released RetinaMask code (a checkout of github.com/chengyangfu/retinamask) run on the
CPU as the reference of bench/reference_parity.py, in the benchmark-only torch venv.

Its modelling code runs as it is; only what a 2019 checkout cannot do on a current stack
is replaced, before it is imported:
  * its compiled ``maskrcnn_benchmark._C`` extension, by equivalents on torch/torchvision
    ops that keep its CPU kernels' conventions: NMS with "+1" widths suppressing at
    ``IoU >= threshold``; the legacy RoIAlign (``torchvision.ops.roi_align``,
    ``aligned=False``, the same Detectron kernel); the sigmoid focal loss of its CUDA
    kernel (labels 1..K, 0 background, -1 ignored); backward passes by autograd;
  * ``torch.distributed.deprecated`` (gone from torch), by ``torch.distributed``;
  * ``np.float``/``np.int`` (gone from NumPy), by the builtins they aliased.
"""

import os
import sys
import types

import numpy as np


def install_shims():
    import torch
    import torchvision

    for name, value in (("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, name):
            setattr(np, name, value)
    sys.modules.setdefault("torch.distributed.deprecated", torch.distributed)

    C = types.ModuleType("maskrcnn_benchmark._C")

    def nms(boxes, scores, threshold):
        """Greedy NMS as the released CPU kernel: "+1" areas, suppress IoU >= threshold."""
        if boxes.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        x1, y1, x2, y2 = boxes.unbind(1)
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = scores.sort(descending=True)[1]
        suppressed = torch.zeros(len(scores), dtype=torch.bool)
        keep = []
        for i in order.tolist():
            if suppressed[i]:
                continue
            keep.append(i)
            xx1 = torch.maximum(x1[i], x1)
            yy1 = torch.maximum(y1[i], y1)
            xx2 = torch.minimum(x2[i], x2)
            yy2 = torch.minimum(y2[i], y2)
            inter = (xx2 - xx1 + 1).clamp(min=0) * (yy2 - yy1 + 1).clamp(min=0)
            ovr = inter / (areas[i] + areas - inter)
            suppressed |= ovr >= threshold
        return torch.tensor(keep, dtype=torch.long)

    def roi_align_forward(x, rois, spatial_scale, out_h, out_w, sampling_ratio):
        return torchvision.ops.roi_align(x, rois, (out_h, out_w), spatial_scale, sampling_ratio,
                                         aligned=False)

    def roi_align_backward(grad, rois, spatial_scale, out_h, out_w, bs, ch, h, w, sampling_ratio):
        x = torch.zeros(bs, ch, h, w, dtype=grad.dtype, requires_grad=True)
        with torch.enable_grad():
            y = roi_align_forward(x, rois, spatial_scale, out_h, out_w, sampling_ratio)
            (g,) = torch.autograd.grad(y, x, grad)
        return g

    def _focal(logits, targets, num_classes, gamma, alpha):
        classes = torch.arange(1, num_classes + 1, dtype=targets.dtype)[None]
        t = targets[:, None]
        p = torch.sigmoid(logits)
        pos = (t == classes).to(logits.dtype)
        neg = ((t != classes) & (t >= 0)).to(logits.dtype)
        log_p = torch.nn.functional.logsigmoid(logits)
        log_1p = torch.nn.functional.logsigmoid(-logits)
        return -pos * alpha * (1 - p) ** gamma * log_p - neg * (1 - alpha) * p ** gamma * log_1p

    def sigmoid_focalloss_forward(logits, targets, num_classes, gamma, alpha):
        return _focal(logits, targets, num_classes, gamma, alpha)

    def sigmoid_focalloss_backward(logits, targets, d_losses, num_classes, gamma, alpha):
        x = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            y = _focal(x, targets, num_classes, gamma, alpha)
            (g,) = torch.autograd.grad(y, x, d_losses)
        return g

    def unsupported(*_):
        raise NotImplementedError("RoIPool is not used by RetinaMask")

    C.nms = nms
    C.roi_align_forward = roi_align_forward
    C.roi_align_backward = roi_align_backward
    C.sigmoid_focalloss_forward = sigmoid_focalloss_forward
    C.sigmoid_focalloss_backward = sigmoid_focalloss_backward
    C.roi_pool_forward = C.roi_pool_backward = unsupported
    sys.modules["maskrcnn_benchmark._C"] = C


def build(reference_repo, config_file, extra=()):
    """(model in eval mode, cfg) of the released code for ``config_file`` on the CPU."""
    sys.path.insert(0, os.path.abspath(reference_repo))
    install_shims()
    import maskrcnn_benchmark
    maskrcnn_benchmark._C = sys.modules["maskrcnn_benchmark._C"]
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    cfg = cfg.clone()
    cfg.merge_from_file(os.path.join(reference_repo, config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"] + list(extra))
    cfg.freeze()
    model = build_detection_model(cfg)
    model.eval()
    return model, cfg


RELEASED_CONFIG = "configs/retina/retinanet_mask_R-50-FPN_2x_adjust_std011_ms.yaml"
PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)


NARROW = ["MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
          "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.BACKBONE.OUT_CHANNELS", 16,
          "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (16, 16, 16, 16), "RETINANET.NUM_CLASSES", 6,
          "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 6]


def reference_outputs(reference_repo, image, randomise, seed, weights_path, narrow=False):
    """The released R-50-FPN RetinaMask with seeded random weights on ``image`` ([H, W, 3]
    uint8 RGB, sides multiples of 128): saves its state dict to ``weights_path`` and returns
    its outputs as NumPy (features NHWC; per-anchor outputs in its (level, y, x, anchor)
    order; anchors and boxes as continuous xyxy, i.e. its "+1" boxes with x2 + 1, y2 + 1;
    labels 0-based; the mask probabilities of its first 16 detections' classes)."""
    import torch

    model, cfg = build(reference_repo, RELEASED_CONFIG, NARROW if narrow else ())
    from maskrcnn_benchmark.structures.image_list import to_image_list

    randomise(model, seed)
    with torch.no_grad():  # its input is not divided by a std: keep activations O(1)
        model.backbone.body.stem.conv1.weight /= 57.4
    torch.save({"model": model.state_dict(), "iteration": 0}, weights_path)
    x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).float()
    x = (x - torch.tensor(PIXEL_MEAN_BGR)).permute(2, 0, 1)[None]
    images = to_image_list(x[0], 32)
    out = {}
    with torch.no_grad():
        body = model.backbone.body(images.tensors)
        for i, v in enumerate(body[1:]):
            out[f"C{i + 3}"] = v.permute(0, 2, 3, 1).numpy()
        features = model.backbone.fpn(body)
        for i, v in enumerate(features):
            out[f"P{i + 3}"] = v.permute(0, 2, 3, 1).numpy()
        box_cls, box_reg = model.rpn.head(features)

        def flat(levels, per):
            return np.concatenate([t[0].permute(1, 2, 0).reshape(-1, per).numpy() for t in levels])

        k = box_cls[0].shape[1] // (box_reg[0].shape[1] // 4)
        out["cls_logits"] = flat(box_cls, k)
        out["box_deltas"] = flat(box_reg, 4)
        anchors = model.rpn.anchor_generator(images, features)
        out["anchors_xyxy"] = np.concatenate([a.bbox.numpy() for a in anchors[0]]) + [0, 0, 1, 1]
        det = model.rpn.box_selector_test(anchors, box_cls, box_reg)[0]
        out["det_boxes_xyxy"] = det.bbox.numpy() + np.array([0, 0, 1, 1], np.float32)
        out["det_scores"] = det.get_field("scores").numpy()
        out["det_labels"] = det.get_field("labels").numpy() - 1
        _, result, _ = model.mask(features, [det[:16]])  # masks of the top 16, their class
        out["det_masks"] = result[0].get_field("mask")[:, 0].numpy()
    out["level_hw"] = np.array([[f.shape[2], f.shape[3]] for f in features])
    return out


def reference_training(reference_repo, image, boxes, labels, randomise, seed, weights_path,
                       steps=5):
    """The released RetinaNet losses (mask head off) on one image with GT ``boxes``
    ([G, 4] continuous xyxy) and 0-based ``labels``, ``steps`` times without updating the
    weights (the self-adjusting beta state evolves): per step cls/box loss and the beta
    running mean/var; the gradient of every trainable parameter at the first step."""
    import torch

    model, cfg = build(reference_repo, RELEASED_CONFIG, ["MODEL.MASK_ON", "False"])
    randomise(model, seed)
    with torch.no_grad():
        model.backbone.body.stem.conv1.weight /= 57.4
    torch.save({"model": model.state_dict(), "iteration": 0}, weights_path)
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.structures.image_list import to_image_list

    x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).float()
    x = (x - torch.tensor(PIXEL_MEAN_BGR)).permute(2, 0, 1)
    images = to_image_list(x, 32)
    h, w = image.shape[:2]
    target = BoxList(torch.from_numpy(boxes - np.array([0, 0, 1, 1], np.float32)), (w, h), "xyxy")
    target.add_field("labels", torch.from_numpy(labels.astype(np.int64) + 1))
    model.train()
    smooth_l1 = model.rpn.loss_evaluator.regression_loss
    out = {}
    for step in range(steps):
        model.zero_grad()
        losses = model(images, [target])
        if step == 0:
            (losses["loss_retina_cls"] + losses["loss_retina_reg"]).backward()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    out[f"grad/{name}"] = p.grad.numpy().copy()
        out[f"cls_loss/{step}"] = np.float64(losses["loss_retina_cls"].item())
        out[f"box_loss/{step}"] = np.float64(losses["loss_retina_reg"].item())
        out[f"running_mean/{step}"] = smooth_l1.running_mean.numpy().copy()
        out[f"running_var/{step}"] = smooth_l1.running_var.numpy().copy()
    # The first step's gradients once more in float64: the exact value both float32
    # computations are measured against (float32 sums over a feature map lose ~1e-4).
    model = model.double()
    smooth_l1.running_mean = torch.full((4,), smooth_l1.beta, dtype=torch.float64)
    smooth_l1.running_var = torch.zeros(4, dtype=torch.float64)
    target64 = BoxList(target.bbox.double(), (w, h), "xyxy")
    target64.add_field("labels", target.get_field("labels"))
    model.zero_grad()
    losses = model(to_image_list(x.double(), 32), [target64])
    (losses["loss_retina_cls"] + losses["loss_retina_reg"]).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[f"grad64/{name}"] = p.grad.numpy().copy()
    return out
