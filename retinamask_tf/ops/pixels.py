"""Pixel statistics of the input normalisations, and the pixel the padding is filled with.

Means are RGB on the 0..255 scale. ``pad_pixel`` is None (black, our default: the padded
area is 0 before normalisation) or the normalisation's mean pixel (``data.pad_value:
mean``: 0 after normalisation, as PyTorch detectors pad their normalised batch).
"""

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# The released RetinaMask / Detectron (Caffe2) pixel mean, as RGB (it subtracts it in BGR).
DETECTRON_MEAN = (122.7717, 115.9465, 102.9801)
MEANS = {"imagenet": IMAGENET_MEAN, "caffe": IMAGENET_MEAN, "detectron_caffe": DETECTRON_MEAN,
         "inception": (127.5, 127.5, 127.5)}
# What Keras' ImageNet weights of each backbone expect: caffe (BGR minus the mean) for
# ResNet, inception (pixels scaled to [-1, 1]) for the MobileNets.
IMAGENET_WEIGHTS_NORM = {"resnet": "caffe", "mobilenet_v2": "inception",
                         "mobilenet_v3_large": "inception", "mobilenet_v3_small": "inception"}


def resolve_norm(input_norm, backbone):
    """The normalisation mode of ``model.input_norm`` for ``backbone`` (a
    ``BackboneConfig``): "auto" is what its Keras ImageNet weights expect when it has them,
    else imagenet."""
    if input_norm != "auto":
        return input_norm
    return IMAGENET_WEIGHTS_NORM[backbone.name] if backbone.weights == "imagenet" else "imagenet"


def pad_pixel(config):
    """None or the RGB pixel (3 floats, 0..255) the padding of ``config``'s inputs holds."""
    if config.data.pad_value != "mean":
        return None
    return MEANS[resolve_norm(config.model.input_norm, config.model.backbone)]
