"""The backbones by name (``model.backbone.name``): the one place a name becomes a network.

Every builder takes the ``ModelConfig`` and returns a ``keras.Model`` from normalised
images [B, H, W, 3] to {"C3", "C4", "C5"} at strides 8, 16 and 32 (the normalisation its
ImageNet weights expect: ``ops.pixels.IMAGENET_WEIGHTS_NORM``).
"""

from retinamask_tf.modeling.mobilenet import build_mobilenet
from retinamask_tf.modeling.resnet import build_keras_applications_resnet, build_resnet


def _resnet(m):
    b = m.backbone
    if b.weights == "imagenet":
        return build_keras_applications_resnet(b.depth, b.norm, b.freeze_stages)
    return build_resnet(b.depth, b.norm, b.width, b.freeze_stages, padding=m.conv_padding,
                        stride_in_1x1=b.stride_in_1x1, conv_algorithm=m.conv_algorithm)


def _mobilenet(name):
    def build(m):
        b = m.backbone
        return build_mobilenet(name, b.alpha, b.norm, b.weights, m.conv_padding, b.minimalistic)
    return build


BACKBONES = {
    "resnet": _resnet,
    "mobilenet_v2": _mobilenet("mobilenet_v2"),
    "mobilenet_v3_large": _mobilenet("mobilenet_v3_large"),
    "mobilenet_v3_small": _mobilenet("mobilenet_v3_small"),
}


def build_backbone(model_config):
    """The backbone ``model_config.backbone.name`` names."""
    return BACKBONES[model_config.backbone.name](model_config)
