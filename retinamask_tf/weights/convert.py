"""PyTorch state dicts <-> our model's variables, for each source in ``weights.sources``.

``layout(model, source)`` lists every slot: a Keras layer of ours, the source's key prefix
and how the tensors turn into each other:

  conv     torch ``[out, in, kh, kw]`` -> Keras ``[kh, kw, in, out]`` (+ bias)
  dwconv   torch depthwise ``[channels, 1, kh, kw]`` -> Keras ``[kh, kw, channels, 1]``
  deconv   torch ConvTranspose ``[in, out, kh, kw]`` -> Keras ``[kh, kw, out, in]``
  bn       torchvision FrozenBatchNorm2d (eps 1e-5, as ours): copied as it is
  bn0      maskrcnn-benchmark FrozenBatchNorm2d (no eps): gamma scaled by
           ``sqrt(var + eps) / sqrt(var)`` so that ours computes the same
  gn       GroupNorm weight/bias
  cls/box  the heads' predictors: channels reordered from the source's ratio-major
           anchors to our scale-major ones, box deltas from (dx, dy, dw, dh) to
           (dy, dx, dh, dw), class channels picked by ``class_map``
  mask     the mask predictor's class channels picked by ``mask_class_map``

``load(model, state, source, class_map, mask_class_map)`` assigns them and raises
``WeightsError`` naming the key for a missing key, a wrong shape or a key no slot reads
(a checkpoint of another source); ``to_state_dict`` is its inverse.
"""

import dataclasses
import re
from typing import Optional, Sequence

import keras
import numpy as np

from retinamask_tf.modeling.resnet import SPECS
from retinamask_tf.weights.sources import Source

BN_EPS = 1e-5
# Keys a source's file holds that no layer of ours reads.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.", "classifier.", "rpn.anchor_generator.", "anchor_generator.")


class WeightsError(ValueError):
    """A state dict that does not fit the source or the model (names the key)."""


@dataclasses.dataclass(frozen=True)
class Slot:
    kind: str  # conv, dwconv, deconv, bn, bn0, gn, cls, box, mask
    layer: object  # the Keras layer
    key: str  # the source's key prefix (without .weight/.bias)
    aliases: tuple = ()  # older spellings of the same prefix


# ---------------------------------------------------------------------------- layout

def _backbone_slots(model, source):
    backbone = model.backbone
    released = source.name == "retinamask"
    body = "backbone.body." if source.detector else ""
    bn = "bn0" if released else "bn"
    stem = body + ("stem." if released else "")
    slots = [Slot("conv", backbone.get_layer("stem_conv"), stem + "conv1"),
             Slot(bn, backbone.get_layer("stem_norm"), stem + "bn1")]
    depth = _backbone_depth(backbone)
    kind, repeats = SPECS[depth]
    convs = 3 if kind == "bottleneck" else 2
    for stage, blocks in enumerate(repeats, start=2):
        for b in range(blocks):
            ours = f"res{stage}_{b}"
            theirs = f"{body}layer{stage - 1}.{b}."
            for i in range(1, convs + 1):
                slots.append(Slot("conv", backbone.get_layer(f"{ours}_{i}_conv"), f"{theirs}conv{i}"))
                slots.append(Slot(bn, backbone.get_layer(f"{ours}_{i}_norm"), f"{theirs}bn{i}"))
            try:
                short = backbone.get_layer(f"{ours}_short_conv")
            except ValueError:
                continue
            slots.append(Slot("conv", short, f"{theirs}downsample.0"))
            slots.append(Slot(bn, backbone.get_layer(f"{ours}_short_norm"), f"{theirs}downsample.1"))
    return slots


# Keras MobileNetV3 layer names: "expanded_conv[_<n>]_<part>[_bn | _1]"
_MOBILENET_LAYER = re.compile(r"expanded_conv(?:_(\d+))?_(expand|depthwise|squeeze_excite_conv|"
                              r"project)(_bn|_1)?$")


def _mobilenet_v3_slots(model, source):
    """torchvision's ``mobilenet_v3_large`` / ``_small`` ``features`` in Keras' MobileNetV3:
    ``features.0`` the stem (conv, bn), ``features.<n + 1>`` block n, whose modules are
    numbered in order (expand conv + bn if any, depthwise conv + bn, squeeze-excite
    fc1/fc2 if any, project conv + bn), then the last 1x1 conv + bn. Keras' layers come in
    the same order under stable names."""
    slots, modules = [], {}
    for layer in model.backbone.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                  keras.layers.BatchNormalization)):
            continue
        kind = ("bn" if isinstance(layer, keras.layers.BatchNormalization) else
                "dwconv" if isinstance(layer, keras.layers.DepthwiseConv2D) else "conv")
        if layer.name in ("conv", "conv_bn"):  # the stem
            slots.append(Slot(kind, layer, "features.0." + ("1" if kind == "bn" else "0")))
            continue
        if layer.name in ("conv_1", "conv_1_bn"):  # the last 1x1 conv
            last = len({n for n, _ in modules}) + 1
            slots.append(Slot(kind, layer, f"features.{last}." + ("1" if kind == "bn" else "0")))
            continue
        match = _MOBILENET_LAYER.match(layer.name)
        if not match:
            raise WeightsError(f"layer {layer.name} of the backbone is not one of Keras' "
                               "MobileNetV3 layers: torchvision MobileNetV3 weights do not fit")
        block, part, suffix = int(match.group(1) or 0), match.group(2), match.group(3)
        index = modules.setdefault((block, part), sum(1 for b, _ in modules if b == block))
        prefix = f"features.{block + 1}.block.{index}"
        if part == "squeeze_excite_conv":
            slots.append(Slot(kind, layer, prefix + (".fc2" if suffix == "_1" else ".fc1")))
        else:
            slots.append(Slot(kind, layer, prefix + (".1" if kind == "bn" else ".0")))
    return slots


BACKBONE_SLOTS = {"resnet": _backbone_slots, "mobilenet_v3": _mobilenet_v3_slots}


def _backbone_depth(backbone):
    names = {layer.name for layer in backbone.layers}
    kind = "bottleneck" if "res2_0_3_conv" in names else "basic"
    for depth, (k, repeats) in SPECS.items():
        if k == kind and f"res4_{repeats[2] - 1}_1_conv" in names and \
                f"res4_{repeats[2]}_1_conv" not in names:
            return depth
    raise WeightsError("the model's backbone is not one of the ResNets weights can be imported into")


def _fpn_slots(model, source):
    fpn = model.fpn
    if fpn.group_norm:
        raise WeightsError("importing into an FPN with GroupNorm is not supported (no source "
                           "converted here has one)")
    slots = []
    for i, level in enumerate((3, 4, 5)):
        if source.name == "retinamask":
            inner, layer = f"backbone.fpn.fpn_inner{level - 1}", f"backbone.fpn.fpn_layer{level - 1}"
            inner_alias = layer_alias = ()
        else:
            inner, layer = f"backbone.fpn.inner_blocks.{i}.0", f"backbone.fpn.layer_blocks.{i}.0"
            inner_alias = (f"backbone.fpn.inner_blocks.{i}",)
            layer_alias = (f"backbone.fpn.layer_blocks.{i}",)
        slots.append(Slot("conv", fpn.lateral[f"C{level}"], inner, inner_alias))
        slots.append(Slot("conv", fpn.output_convs[f"P{level}"], layer, layer_alias))
    extra = "backbone.fpn.top_blocks" if source.name == "retinamask" else "backbone.fpn.extra_blocks"
    for level in range(6, fpn.max_level + 1):
        slots.append(Slot("conv", fpn.extra[f"P{level}"], f"{extra}.p{level}"))
    return slots


def _head_slots(model, source):
    head = model.head
    slots = []
    released = source.name == "retinamask"
    if head.separable or head.batch_norm:
        raise WeightsError("PyTorch sources have plain 3x3 heads: import into "
                           "model.head.separable=false, model.head.batch_norm=false")
    first = head.min_level  # GroupNorm (or none) is shared over the levels
    towers = (("cls", head.cls_convs, head.cls_norms[first], "rpn.head.cls_tower" if released
               else "head.classification_head.conv"),
              ("box", head.box_convs, head.box_norms[first], "rpn.head.bbox_tower" if released
               else "head.regression_head.conv"))
    for _, convs, norms, prefix in towers:
        for i, (conv, norm) in enumerate(zip(convs, norms)):
            if released:
                if norm is not None:
                    raise WeightsError("the released GroupNorm heads (conv with bias, then GN) "
                                       "are not supported: import a model without GN")
                slots.append(Slot("conv", conv, f"{prefix}.{2 * i}"))
            else:
                slots.append(Slot("conv", conv, f"{prefix}.{i}.0", (f"{prefix}.{2 * i}",)))
                if norm is not None:
                    slots.append(Slot("gn", norm, f"{prefix}.{i}.1"))
    if released:
        slots.append(Slot("cls", head.cls_pred, "rpn.head.cls_logits"))
        slots.append(Slot("box", head.box_pred, "rpn.head.bbox_pred"))
    else:
        slots.append(Slot("cls", head.cls_pred, "head.classification_head.cls_logits"))
        slots.append(Slot("box", head.box_pred, "head.regression_head.bbox_reg"))
    return slots


def _mask_slots(model):
    mask_head = model.mask_branch.mask_head
    if mask_head.group_norm:
        raise WeightsError("importing a GroupNorm mask head is not supported")
    slots = [Slot("conv", conv, f"mask.feature_extractor.mask_fcn{i + 1}")
             for i, conv in enumerate(mask_head.convs)]
    slots.append(Slot("deconv", mask_head.upsample, "mask.predictor.conv5_mask"))
    slots.append(Slot("mask", mask_head.predictor, "mask.predictor.mask_fcn_logits"))
    return slots


def layout(model, source: Source, masks: bool = True):
    """Every slot of ``source`` in ``model``: the backbone for a backbone-only source, the
    whole detector for the others, the mask head too when ``masks`` and both have one."""
    slots = BACKBONE_SLOTS[source.backbone](model, source)
    if source.detector:
        slots += _fpn_slots(model, source) + _head_slots(model, source)
    if masks and source.has_masks and model.has_masks:
        slots += _mask_slots(model)
    return slots


# ---------------------------------------------------------------------------- tensors

def _anchor_order(num_scales, num_ratios):
    """Source anchor index (ratio-major) of each of our anchors (scale-major)."""
    return np.array([r * num_scales + s for s in range(num_scales) for r in range(num_ratios)])


_DELTA_ORDER = np.array([1, 0, 3, 2])  # ours (dy, dx, dh, dw) <- theirs (dx, dy, dw, dh)


def _predictor_channels(model, kind, class_map, source_classes):
    """Source output channel of each of our predictor's output channels."""
    gen = model.anchor_generator
    order = _anchor_order(gen.num_scales, len(gen.aspect_ratios))
    if kind == "box":
        return (order[:, None] * 4 + _DELTA_ORDER[None, :]).reshape(-1)
    class_map = np.asarray(class_map)
    return (order[:, None] * source_classes + class_map[None, :]).reshape(-1)


def _conv_kernel(w):
    """torch Conv [out, in, kh, kw] / ConvTranspose [in, out, kh, kw] -> Keras Conv2D
    [kh, kw, in, out] / Conv2DTranspose [kh, kw, out, in]: one permutation for both."""
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise_kernel(w):
    """torch depthwise Conv [channels, 1, kh, kw] <-> Keras DepthwiseConv2D [kh, kw,
    channels, 1]: the permutation is its own inverse, so it converts both ways."""
    return np.transpose(w, (2, 3, 0, 1))


def _torch_kernel(k):
    """The inverse of ``_conv_kernel``."""
    return np.transpose(k, (3, 2, 0, 1))


class _State:
    """The state dict being read: finds keys under their aliases, records what was read."""

    def __init__(self, state, source_name):
        self.state = state
        self.source_name = source_name
        self.used = set()

    def get(self, slot, suffix):
        for prefix in (slot.key,) + tuple(slot.aliases):
            key = f"{prefix}.{suffix}"
            if key in self.state:
                self.used.add(key)
                value = np.asarray(self.state[key])
                if value.dtype == np.float16:  # a half-precision checkpoint
                    value = value.astype(np.float32)
                return key, value
        raise WeightsError(f"key {slot.key}.{suffix} is missing: not a {self.source_name} "
                           "checkpoint of this architecture (depth, heads, mask head)?")


def _check_shape(key, value, shape):
    if tuple(value.shape) != tuple(shape):
        raise WeightsError(f"key {key}: shape {tuple(value.shape)} where {tuple(shape)} is "
                           "needed (another depth, width or number of classes?)")


def _source_classes(value_channels, num_anchors, per_anchor):
    if value_channels % num_anchors:
        raise WeightsError(f"{value_channels} output channels are not a multiple of "
                           f"{num_anchors} anchors")
    return value_channels // num_anchors if per_anchor else value_channels


def load(model, state, source: Source, class_map: Optional[Sequence[int]] = None,
         mask_class_map: Optional[Sequence[int]] = None, masks: bool = True,
         strict: bool = True):
    """Assigns ``state`` ({key: np.ndarray}) to ``model``'s variables.

    Args:
      class_map: the source's class channel of each of our classes (None: the class
        predictor keeps its initialisation, e.g. fine-tuning on other classes).
      mask_class_map: the same for the mask predictor (None: keeps its initialisation).
      masks: import the mask head (when both have one).
      strict: every key of ``state`` must be read (or be known to carry nothing we use).
    Returns:
      list of the layer names left at their initialisation.
    Raises:
      WeightsError naming the key: missing, wrong shape, or (strict) unread.
    """
    reader = _State(state, source.name)
    kept = []
    for slot in layout(model, source, masks):
        layer = slot.layer
        if slot.kind in ("conv", "dwconv", "deconv"):
            key, w = reader.get(slot, "weight")
            kernel = _conv_kernel(w) if slot.kind != "dwconv" else _depthwise_kernel(w)
            _check_shape(key, kernel, layer.kernel.shape)
            values = [kernel]
            if layer.use_bias:
                key, b = reader.get(slot, "bias")
                _check_shape(key, b, layer.bias.shape)
                values.append(b)
            elif any(f"{p}.bias" in state for p in (slot.key,) + tuple(slot.aliases)):
                raise WeightsError(f"key {slot.key}.bias: the source has a bias where our "
                                   f"layer {layer.name} has none")
            layer.kernel.assign(values[0])
            if layer.use_bias:
                layer.bias.assign(values[1])
        elif slot.kind in ("bn", "bn0"):
            parts = {}
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                key, v = reader.get(slot, suffix)
                _check_shape(key, v, layer.gamma.shape)
                parts[suffix] = v.astype(np.float64)
            gamma = parts["weight"]
            if slot.kind == "bn0":  # no eps in the source: fold sqrt(var + eps) / sqrt(var)
                gamma = gamma * np.sqrt(parts["running_var"] + BN_EPS) / np.sqrt(parts["running_var"])
            layer.gamma.assign(gamma.astype(np.float32))
            layer.beta.assign(parts["bias"].astype(np.float32))
            layer.moving_mean.assign(parts["running_mean"].astype(np.float32))
            layer.moving_variance.assign(parts["running_var"].astype(np.float32))
        elif slot.kind == "gn":
            for suffix, var in (("weight", layer.gamma), ("bias", layer.beta)):
                key, v = reader.get(slot, suffix)
                _check_shape(key, v, var.shape)
                var.assign(v)
        elif slot.kind in ("cls", "box", "mask"):
            mapping = {"cls": class_map, "box": None, "mask": mask_class_map}[slot.kind]
            key, w = reader.get(slot, "weight")
            bkey, b = reader.get(slot, "bias")
            if slot.kind != "box" and mapping is None:
                kept.append(layer.name)
                continue
            kernel = _conv_kernel(w)
            if kernel.shape[:3] != tuple(layer.kernel.shape[:3]):
                _check_shape(key, kernel, layer.kernel.shape)
            if slot.kind == "mask":
                channels = np.asarray(mapping)
            else:
                num_anchors = model.anchor_generator.num_anchors
                per = 4 if slot.kind == "box" else _source_classes(w.shape[0], num_anchors, True)
                if slot.kind == "box" and w.shape[0] != 4 * num_anchors:
                    raise WeightsError(f"key {key}: {w.shape[0]} box channels where "
                                       f"{4 * num_anchors} (4 per anchor) are needed")
                if slot.kind == "cls" and max(mapping) >= per:
                    raise WeightsError(f"key {key}: {per} classes per anchor, but class "
                                       f"channel {max(mapping)} is asked for (a checkpoint "
                                       "with another number of classes?)")
                channels = _predictor_channels(model, slot.kind, mapping, per)
            if channels.size != layer.kernel.shape[-1]:
                raise WeightsError(f"key {key}: {channels.size} channels picked for the "
                                   f"{layer.kernel.shape[-1]} outputs of {layer.name}")
            if channels.max() >= w.shape[0] or channels.min() < 0:
                raise WeightsError(f"key {key}: has {w.shape[0]} output channels; the class "
                                   f"map asks for channel {int(channels.max())}")
            layer.kernel.assign(kernel[..., channels])
            layer.bias.assign(b[channels])
        else:  # pragma: no cover
            raise AssertionError(slot.kind)
    if strict:
        unread = [k for k in state if k not in reader.used
                  and not k.endswith(_IGNORED_SUFFIXES) and not k.startswith(_IGNORED_PREFIXES)
                  and not (not masks and k.startswith("mask."))
                  and not (not model.has_masks and k.startswith("mask."))]
        if unread:
            more = f" (and {len(unread) - 5} more)" if len(unread) > 5 else ""
            raise WeightsError(f"key {unread[0]} is not read by any layer of a {source.name} "
                               f"model: {', '.join(unread[:5])}{more}. A checkpoint of another "
                               "source, or another architecture?")
    return kept


def to_state_dict(model, source: Source, class_map=None, source_classes=None,
                  mask_class_map=None, mask_source_classes=None, masks=True):
    """Our weights in ``source``'s layout (the inverse of ``load``).

    Predictor channels that no class of ours maps to are zero. Used by the tests (round
    trips without torch) and by the parity harness.
    """
    out = {}
    for slot in layout(model, source, masks):
        layer = slot.layer
        if slot.kind in ("conv", "dwconv", "deconv"):
            kernel = layer.kernel.numpy()
            out[f"{slot.key}.weight"] = (_torch_kernel(kernel) if slot.kind != "dwconv"
                                         else _depthwise_kernel(kernel))
            if layer.use_bias:
                out[f"{slot.key}.bias"] = layer.bias.numpy()
        elif slot.kind in ("bn", "bn0"):
            gamma = layer.gamma.numpy().astype(np.float64)
            var = layer.moving_variance.numpy().astype(np.float64)
            if slot.kind == "bn0":
                gamma = gamma * np.sqrt(var) / np.sqrt(var + BN_EPS)
            out[f"{slot.key}.weight"] = gamma.astype(np.float32)
            out[f"{slot.key}.bias"] = layer.beta.numpy()
            out[f"{slot.key}.running_mean"] = layer.moving_mean.numpy()
            out[f"{slot.key}.running_var"] = layer.moving_variance.numpy()
        elif slot.kind == "gn":
            out[f"{slot.key}.weight"] = layer.gamma.numpy()
            out[f"{slot.key}.bias"] = layer.beta.numpy()
        else:
            kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
            if slot.kind == "mask":
                channels, total = np.asarray(mask_class_map), mask_source_classes
            else:
                num_anchors = model.anchor_generator.num_anchors
                per = 4 if slot.kind == "box" else source_classes
                channels = _predictor_channels(model, slot.kind, class_map, per)
                total = num_anchors * per
            w = np.zeros((total, kernel.shape[2], kernel.shape[0], kernel.shape[1]), np.float32)
            b = np.zeros((total,), np.float32)
            w[channels] = _torch_kernel(kernel)
            b[channels] = bias
            out[f"{slot.key}.weight"] = w
            out[f"{slot.key}.bias"] = b
    return out
