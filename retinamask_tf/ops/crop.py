"""Bilinear crops that XLA can compile."""

import tensorflow as tf


def _sample_grid(image_shape, boxes, crop_size):
    """Where bilinear ``crop_and_resize`` samples, with the kernel's own formula
    (``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (n - 1)``, the centre when n = 1): per
    box, the rows/columns of the four neighbours (clipped into the image; int32 [R, n]),
    the fractional offsets (float32 [R, n]) and whether each sample is inside the image."""
    height, width = image_shape[1], image_shape[2]
    boxes = tf.cast(boxes, tf.float32)

    def positions(lo, hi, size, n):  # [R] -> sample coordinates [R, n]
        extent = tf.cast(size - 1, tf.float32)
        if n > 1:
            step = (hi - lo) * extent / float(n - 1)
            return lo[:, None] * extent + tf.range(n, dtype=tf.float32)[None, :] * step[:, None]
        return (0.5 * (lo + hi) * extent)[:, None]

    ys = positions(boxes[:, 0], boxes[:, 2], height, crop_size[0])  # [R, n_h]
    xs = positions(boxes[:, 1], boxes[:, 3], width, crop_size[1])  # [R, n_w]
    top, left = tf.floor(ys), tf.floor(xs)
    return {"inside_y": (ys >= 0.0) & (ys <= tf.cast(height - 1, tf.float32)),
            "inside_x": (xs >= 0.0) & (xs <= tf.cast(width - 1, tf.float32)),
            "y_lerp": ys - top, "x_lerp": xs - left,
            "top": tf.clip_by_value(tf.cast(top, tf.int32), 0, height - 1),
            "bottom": tf.clip_by_value(tf.cast(tf.math.ceil(ys), tf.int32), 0, height - 1),
            "left": tf.clip_by_value(tf.cast(left, tf.int32), 0, width - 1),
            "right": tf.clip_by_value(tf.cast(tf.math.ceil(xs), tf.int32), 0, width - 1)}


def gather_crop_and_resize(image, boxes, box_indices, crop_size, extrapolation_value=0.0):
    """``tf.image.crop_and_resize`` (bilinear) in gathers, which XLA compiles.

    ``CropAndResize`` has no XLA kernel; this computes the same sample positions with the
    kernel's own formula (``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (n - 1)``, the centre
    when n = 1), blends the four neighbouring pixels, and gives ``extrapolation_value`` to a
    sample outside [0, H - 1] x [0, W - 1]. Its gradient (of gathers) flows to ``image``
    and is exact and deterministic, where TF's own CPU gradient races (see
    ``crop_and_resize_exact_grad``). The model uses this form under XLA; it is about 10x
    slower than the kernel on CPU.

    Args:
      image: [N, H, W, C] float32; boxes: [R, 4] normalised yxyx; box_indices: [R] int32.
      crop_size: (n_h, n_w).
    Returns:
      [R, n_h, n_w, C] float32.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    channels = image.shape[-1] if image.shape[-1] is not None else shape[3]
    g = _sample_grid(shape, boxes, crop_size)
    top, bottom, left, right = g["top"], g["bottom"], g["left"], g["right"]
    y_lerp, x_lerp, inside_y, inside_x = g["y_lerp"], g["x_lerp"], g["inside_y"], g["inside_x"]
    flat = tf.reshape(image, [-1, channels])
    base = tf.cast(box_indices, tf.int32)[:, None, None] * height * width

    def pixels(rows, cols):  # [R, n_h], [R, n_w] -> [R, n_h, n_w, C]
        return tf.gather(flat, base + rows[:, :, None] * width + cols[:, None, :])

    x_lerp = x_lerp[:, None, :, None]
    upper = pixels(top, left) + (pixels(top, right) - pixels(top, left)) * x_lerp
    lower = pixels(bottom, left) + (pixels(bottom, right) - pixels(bottom, left)) * x_lerp
    crops = upper + (lower - upper) * y_lerp[:, :, None, None]
    inside = (inside_y[:, :, None] & inside_x[:, None, :])[..., None]
    return tf.where(inside, crops, tf.cast(extrapolation_value, tf.float32))


def _cpu_only():
    return not tf.config.list_logical_devices("GPU")


def crop_and_resize_exact_grad(image, boxes, crop_size):
    """``tf.image.crop_and_resize`` (bilinear, extrapolation 0) of R boxes per image whose
    image gradient is exact on CPU.

    TF's CPU ``CropAndResizeGradImage`` (TF 2.21 ``crop_and_resize_op.cc``) gives each
    thread a contiguous range of boxes, and the threads add into the image gradient without
    synchronisation (one thread only under op determinism). When one image's boxes
    straddle two ranges, the boxes at the seam lose each other's contributions: 4 images x
    32 boxes on 2 cores returned a different gradient on each of 20 identical calls, off by
    up to 11.7 on values of about 30. Here the forward pass is the kernel and the backward
    pass is exact and repeats bit for bit, in one of two forms chosen by the image's size:
      slots    (small maps) the kernel writes each box into its own slot of a
               [B * R, H, W, C] temporary, so no two boxes share memory; then each image's
               R slots are summed;
      scatter  (large maps) each sample's upstream value is added into its four
               neighbours with ``tensor_scatter_nd_add`` (sequential on CPU, so in a fixed
               order); memory: a few copies of the upstream gradient.
    The slots cost about 1 ns per (RoI, pixel, channel) of the map and the scatter about
    2.5 ns per (RoI, sample, channel) per neighbour (2 cores, AMD EPYC): slots while
    H * W <= 10 * n_h * n_w. On the demo's stacked maps (62x34, 64 channels, 8 x 24 RoIs)
    that is slots, 25 ms against 96 ms; for a 800x1344 ResNet-50-FPN (181x170, 256
    channels, 2 x 20 RoIs) it is scatter, 86 ms and 1.0 GB less peak memory than the
    slots' 128 ms. Both match a numpy reference to float rounding. Where TF sees a GPU this
    is the plain op (the GPU kernel adds atomically). The boxes get no gradient (RoIs are
    constants of the mask loss).

    Args:
      image: [B, H, W, C] float32.
      boxes: [B, R, 4] normalised yxyx (``crop_and_resize``'s convention); box r of
        image b reads image b.
      crop_size: (n_h, n_w).
    Returns:
      [B * R, n_h, n_w, C] float32, image-major (``crop_and_resize`` with
      ``box_indices = repeat(range(B), R)``).
    """
    image = tf.cast(image, tf.float32)
    batch = tf.shape(image)[0]
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    num = tf.shape(boxes)[1]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    indices = tf.repeat(tf.range(batch), num)
    if not _cpu_only():
        return tf.image.crop_and_resize(image, flat_boxes, indices, crop_size,
                                        extrapolation_value=0.0)

    height, width = image.shape[1], image.shape[2]
    use_slots = (height is not None and width is not None
                 and height * width <= 10 * crop_size[0] * crop_size[1])

    @tf.custom_gradient
    def crop(img):
        shape = tf.shape(img)
        out = tf.image.crop_and_resize(img, flat_boxes, indices, crop_size,
                                       extrapolation_value=0.0)

        def grad(upstream):
            if use_slots:
                total = shape[0] * num
                slots = tf.raw_ops.CropAndResizeGradImage(
                    grads=upstream, boxes=flat_boxes, box_ind=tf.range(total),
                    image_size=tf.stack([total, shape[1], shape[2], shape[3]]), T=tf.float32)
                return tf.reduce_sum(
                    tf.reshape(slots, tf.concat([[shape[0], num], shape[1:]], 0)), 1)
            return _scatter_image_grad(upstream, shape, flat_boxes, indices, crop_size)

        return out, grad

    return crop(image)


def _scatter_image_grad(upstream, shape, boxes, box_indices, crop_size):
    """The image gradient of bilinear ``crop_and_resize`` (extrapolation 0): each sample's
    ``upstream`` [R, n_h, n_w, C] added into its four neighbours, in index order."""
    g = _sample_grid(shape, boxes, crop_size)
    base = box_indices[:, None, None] * shape[1] * shape[2]  # [R, 1, 1]
    y_lerp, x_lerp = g["y_lerp"][:, :, None], g["x_lerp"][:, None, :]
    inside = tf.cast(g["inside_y"][:, :, None] & g["inside_x"][:, None, :], tf.float32)
    taps = (("top", "left", (1.0 - y_lerp) * (1.0 - x_lerp)),
            ("top", "right", (1.0 - y_lerp) * x_lerp),
            ("bottom", "left", y_lerp * (1.0 - x_lerp)),
            ("bottom", "right", y_lerp * x_lerp))
    total = tf.zeros([shape[0] * shape[1] * shape[2], shape[3]], tf.float32)
    for row, col, weight in taps:
        index = base + g[row][:, :, None] * shape[2] + g[col][:, None, :]
        value = upstream * (weight * inside)[..., None]
        total = tf.tensor_scatter_nd_add(total, tf.reshape(index, [-1, 1]),
                                         tf.reshape(value, [-1, shape[3]]))
    return tf.reshape(total, shape)
