"""The one resize-and-pad rule of the model's input, in TF and as a NumPy twin.

An image of (H, W) is scaled so that its short side becomes ``short_side`` unless its
long side would then exceed ``long_side``; the scale is reduced further if the result
would not fit the static ``output_size`` (only a non-square ``data.padded_size`` makes
that matter); the resized size is rounded, at least one pixel (an extreme aspect ratio,
1x3000, would round its short side to 0) and at most ``output_size``. The image is
resized bilinearly (half-pixel centres, no antialiasing, as ``tf.image.resize``) and
zero-padded at the bottom/right.

``resize_and_pad`` (TF) is what training, evaluation and the SavedModel run;
``letterbox`` (NumPy, no TensorFlow needed) is the same rule for the TFLite model, whose
input is the already padded image. They agree up to the NumPy twin's rounding to uint8.
The NumPy half runs without TensorFlow (the LiteRT runner's deployments have none), so
TensorFlow is imported by the TF functions themselves.
"""

import numpy as np


# ------------------------------------------------------------------------------ TF


def resize_scale(height, width, short_side, long_side):
    """Scale factor that maps the short side to ``short_side`` unless the long side
    would exceed ``long_side``. height/width: float32 scalars."""
    import tensorflow as tf
    return tf.minimum(short_side / tf.minimum(height, width), long_side / tf.maximum(height, width))


def resize_and_pad(image, short_side, long_side, output_size, jitter=None, pad_value=None):
    """Resizes [H, W, 3] and pads to ``output_size`` (static (h, w)).

    ``short_side`` may be a scalar tensor (multi-scale training); ``jitter`` multiplies the
    scale (the result still fits ``output_size``); ``pad_value``: None (zeros) or the RGB
    pixel the padding holds (``ops.pixels.pad_pixel``).
    Returns:
      (padded image [oh, ow, 3] float32, image_info [4] float32 =
      (original height, original width, scale_y, scale_x)).
    """
    import tensorflow as tf
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short_side = tf.cast(short_side, tf.float32)
    scale = resize_scale(shape[0], shape[1], short_side, float(long_side))
    if jitter is not None:
        scale = scale * jitter
    scale = tf.minimum(scale, tf.minimum(float(output_size[0]) / shape[0],
                                         float(output_size[1]) / shape[1]))
    new_size = tf.cast(tf.round(shape * scale), tf.int32)
    new_size = tf.maximum(tf.minimum(new_size, tf.constant(output_size, tf.int32)), 1)
    resized = tf.image.resize(image, new_size, method="bilinear")
    if pad_value is None:
        padded = tf.image.pad_to_bounding_box(resized, 0, 0, output_size[0], output_size[1])
    else:
        fill = tf.constant(pad_value, tf.float32)
        padded = tf.image.pad_to_bounding_box(resized - fill, 0, 0, output_size[0],
                                              output_size[1]) + fill
    scales = tf.cast(new_size, tf.float32) / shape
    return padded, tf.concat([shape, scales], axis=0)


# --------------------------------------------------------------------------- NumPy


def resized_size(height, width, short_side, long_side, output_size):
    """(height, width) of the image inside the padded input, in plain ints: the rule of
    ``resize_and_pad`` computed in float32 as TF does."""
    h, w = np.float32(height), np.float32(width)
    scale = np.minimum(np.float32(short_side) / min(h, w), np.float32(long_side) / max(h, w))
    scale = np.minimum(scale, np.minimum(np.float32(output_size[0]) / h,
                                         np.float32(output_size[1]) / w))
    return (max(1, min(int(np.round(h * scale)), int(output_size[0]))),
            max(1, min(int(np.round(w * scale)), int(output_size[1]))))


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
    if image.shape[:2] == (height, width):  # TF's resize to the same size is the identity
        return image
    y0, y1, fy = _axis_weights(image.shape[0], height)
    x0, x1, fx = _axis_weights(image.shape[1], width)
    rows = image[y0] + (image[y1] - image[y0]) * fy[:, None, None]  # separable: rows, then
    return rows[:, x0] + (rows[:, x1] - rows[:, x0]) * fx[None, :, None]  # columns


def letterbox(image, short_side, long_side, output_size, pad_value=None):
    """``resize_and_pad`` in NumPy, for the fixed-size TFLite model.

    Args:
      image: [H, W, 3] uint8 RGB (H, W > 0).
      short_side, long_side: the config's ``data.short_side`` / ``data.long_side``.
      output_size: (height, width) the model's static input size.
      pad_value: None (zeros) or the RGB pixel of the padding, rounded to uint8.
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
    padded = np.zeros(tuple(output_size) + (3,), np.uint8)
    if pad_value is not None:
        padded[:] = np.clip(np.round(np.asarray(pad_value, np.float32)), 0, 255).astype(np.uint8)
    if (new_h, new_w) == (h, w):  # already at the model's scale
        padded[:h, :w] = image
    else:
        resized = resize_bilinear(image, new_h, new_w)
        padded[:new_h, :new_w] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    scales = np.array([new_h / np.float32(h), new_w / np.float32(w)], np.float32)
    return padded, np.array([new_h, new_w], np.float32), scales
