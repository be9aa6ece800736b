"""NumPy preprocessing for the fixed-size TFLite model (no TensorFlow needed).

The TFLite model takes the image already resized and padded to the config's static size
(``letterbox``), plus the (height, width) of the resized image inside it. This is the
training/SavedModel preprocessing (``data.parser.resize_and_pad``) in NumPy: the same
scale rule, the same bilinear sampling as ``tf.image.resize`` (half-pixel centres, no
antialiasing), padding at the bottom/right; the only difference is rounding to uint8.
"""

import numpy as np


def resize_scale(height, width, short_side, long_side):
    """The scale mapping the short side to ``short_side`` unless the long side would
    exceed ``long_side`` (``parser.resize_scale``), in float32."""
    h, w = np.float32(height), np.float32(width)
    return np.minimum(np.float32(short_side) / min(h, w), np.float32(long_side) / max(h, w))


def fit_scale(height, width, short_side, long_side, output_size):
    """``resize_scale``, reduced if needed so that the image fits ``output_size`` (as
    ``parser.resize_and_pad``: only a non-square ``data.padded_size`` makes it matter)."""
    scale = resize_scale(height, width, short_side, long_side)
    return np.minimum(scale, np.minimum(np.float32(output_size[0]) / np.float32(height),
                                        np.float32(output_size[1]) / np.float32(width)))


def resized_size(height, width, short_side, long_side, output_size):
    """(height, width) of the image inside the padded input: ``fit_scale``, rounded, at
    least one pixel (an extreme aspect ratio, 1x3000, would round its short side to 0),
    at most ``output_size``; as ``parser.resize_and_pad``."""
    scale = fit_scale(height, width, short_side, long_side, output_size)
    return (max(1, min(int(np.round(np.float32(height) * scale)), int(output_size[0]))),
            max(1, min(int(np.round(np.float32(width) * scale)), int(output_size[1]))))


def _axis_weights(in_size, out_size):
    """(lower index, upper index, fraction) per output position, as TF's ResizeBilinear."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5
    floor = np.floor(pos)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.int64)
    return lower, upper, (pos - floor).astype(np.float32)


def resize_bilinear(image, height, width):
    """[H, W, C] -> [height, width, C] float32, equal to ``tf.image.resize(method='bilinear')``
    up to float rounding."""
    image = np.asarray(image, np.float32)
    y0, y1, fy = _axis_weights(image.shape[0], height)
    x0, x1, fx = _axis_weights(image.shape[1], width)
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx[None, :, None]
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]


def letterbox(image, short_side, long_side, output_size):
    """Resizes an RGB image and pads it to ``output_size`` for the TFLite model.

    Args:
      image: [H, W, 3] uint8 RGB (H, W > 0).
      short_side, long_side: the config's ``data.short_side`` / ``data.long_side``.
      output_size: (height, width) the model's static input size.
    Returns:
      (padded [oh, ow, 3] uint8, true_image_shape [2] float32 = (height, width) of the
      resized image inside ``padded``, scale [2] float32 = (scale_y, scale_x)); boxes in
      the model's frame divided by ``np.tile(scale, 2)`` are in the original image's pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an RGB image [H>0, W>0, 3], got shape {image.shape}")
    h, w = image.shape[:2]
    new_h, new_w = resized_size(h, w, short_side, long_side, output_size)
    resized = resize_bilinear(image, new_h, new_w)
    padded = np.zeros(tuple(output_size) + (3,), np.uint8)
    padded[:new_h, :new_w] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    scales = np.array([new_h / np.float32(h), new_w / np.float32(w)], np.float32)
    return padded, np.array([new_h, new_w], np.float32), scales
