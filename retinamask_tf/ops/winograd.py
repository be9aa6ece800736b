"""3x3 stride-1 "same" convolution by Winograd's minimal filtering, F(4x4, 3x3).

A direct 3x3 convolution does 9 multiply-adds per output per input channel. F(4x4, 3x3)
computes each 4x4 output tile from a 6x6 input tile with 36 element-wise products per
channel pair, summed over input channels as 36 matrix products: 2.25 multiply-adds per
output, 4x fewer (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016). The transforms of input and output are cheap linear maps; the filter transform is
done once per call from the kernel, so gradients flow to the ordinary [3, 3, Cin, Cout]
kernel and checkpoints are unchanged.

In float32 the result differs from a direct convolution by about 1e-5 of the output's
scale (the transforms' coefficients reach 8). On CPUs whose direct convolution already
runs near the matrix-multiply peak it does less work without changing the model; its
rounding in 16-bit precisions is larger and not evaluated, so callers use it for float32
only.

All shapes are NHWC; spatial sizes must be static.
"""

import numpy as np
import tensorflow as tf

TILE = 4                # output tile side (m)
ALPHA = TILE + 2        # input tile side (m + r - 1)

# Lavin & Gray's F(4, 3) matrices with interpolation points 0, +-1, +-2, infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)

# The 2-D transforms as single linear maps over flattened tiles:
#   input  V[a, b] = sum_uv BT[a, u] d[u, v] BT[b, v]   (a conv filter [6, 6, 1, 36])
#   output Y[i, j] = sum_ab AT[i, a] M[a, b] AT[j, b]   (a [16, 36] matrix)
_INPUT_FILTER = np.einsum("au,bv->uvab", _BT, _BT).reshape(ALPHA, ALPHA, 1, ALPHA * ALPHA)
_OUTPUT_MATRIX = np.einsum("ia,jb->ijab", _AT, _AT).reshape(TILE * TILE, ALPHA * ALPHA)


def winograd_kernel(kernel):
    """[3, 3, Cin, Cout] conv kernel -> [36, Cin, Cout], its F(4, 3) transform
    ``G k G^T`` per channel pair, flattened over the 6x6 tile (row-major)."""
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4 or tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"winograd_kernel needs a [3, 3, Cin, Cout] kernel, got {kernel.shape}")
    return tf.reshape(_sandwich(tf.constant(_G, kernel.dtype), kernel),
                      [ALPHA * ALPHA] + kernel.shape[2:])


def _sandwich(g, k):
    """``g k g^T`` over the first two axes of ``k`` [r, r, ...] for ``g`` [s, r] -> [s, s, ...],
    as two matrix products with no transposes: rows, then columns."""
    r, s, rest = g.shape[1], g.shape[0], k.shape[2:]
    rows = tf.reshape(tf.matmul(g, tf.reshape(k, [r, -1])), [s, r, -1])
    return tf.reshape(tf.matmul(g[tf.newaxis], rows), [s, s] + rest)


def winograd_conv3x3(x, kernel, max_band_bytes=2 ** 25, gradient=True):
    """``tf.nn.conv2d(x, kernel, 1, "SAME")`` by F(4x4, 3x3).

    Args:
      x: [N, H, W, Cin] with static H and W.
      kernel: [3, 3, Cin, Cout], same dtype as ``x``; transformed (:func:`winograd_kernel`)
        once ``x`` exists, so that a graph of many layers does not hold all the transformed
        kernels (each 4x its kernel) from its start.
      max_band_bytes: the transformed tiles of a large input are computed in bands of tile
        rows, each band's [36, tiles, max(Cin, Cout)] products under this many bytes (for
        a static batch; 1 image otherwise), which bounds the peak memory without slowing
        the products down.
      gradient: False gives the forward ops alone, for graphs that are never
        differentiated (inference, the exports); True adds the gradient described below.
    Returns:
      [N, H, W, Cout].

    Gradients: the input's is the same convolution of the output's gradient with the
    kernel turned 180 degrees and its channels swapped, computed the same way; the
    kernel's sums the products of the transformed tiles and the output transform's
    adjoint, band by band. Only ``x`` and ``kernel`` are kept from the forward pass, and
    nothing is recomputed before the output's gradient exists: kept, the transformed tiles
    (2.25x the input) and kernels would be held until the backward pass reaches the layer.
    """
    if x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"winograd_conv3x3 needs static spatial sizes, got {x.shape}")
    if not gradient:
        return _convolve(x, tf.convert_to_tensor(kernel), max_band_bytes)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            flipped = tf.reverse(tf.transpose(kernel, [0, 1, 3, 2]), [0, 1])
            return (_convolve(dy, flipped, max_band_bytes),
                    _kernel_gradient(x, dy, max_band_bytes))

        return _convolve(x, kernel, max_band_bytes), grad

    return conv(x, tf.convert_to_tensor(kernel))


def _band_rows(x, channels, max_band_bytes):
    """(tile rows, tile columns, [(first tile row, rows)] of the bands) of ``x`` [N, H, W, C]
    for products of ``channels`` (max of the two sides) channels."""
    th, tw = -(-x.shape[1] // TILE), -(-x.shape[2] // TILE)
    row_bytes = ALPHA * ALPHA * tw * channels * x.dtype.size * (x.shape[0] or 1)
    rows = max(1, min(th, max_band_bytes // row_bytes))
    return th, tw, [(r, min(rows, th - r)) for r in range(0, th, rows)]


def _convolve(x, kernel, max_band_bytes):
    """The forward F(4, 3) of ``x`` [N, H, W, Cin] with ``kernel`` [3, 3, Cin, Cout], band
    by band; the kernel transform waits for ``x``."""
    th, tw, bands = _band_rows(x, max(kernel.shape[2], kernel.shape[3]), max_band_bytes)
    with tf.control_dependencies([x]):
        u = winograd_kernel(kernel)
    ys = [_output_transform(tf.matmul(_input_transform(xb), u), xb)
          for xb in _bands(_pad_to_tiles(x, th, tw), bands)]
    y = ys[0] if len(ys) == 1 else tf.concat(ys, axis=1)
    return y[:, :x.shape[1], :x.shape[2]]


def _kernel_gradient(x, dy, max_band_bytes):
    """d loss / d kernel [3, 3, Cin, Cout] of the convolution of ``x`` [N, H, W, Cin] given
    its output's gradient ``dy`` [N, H, W, Cout]: ``G^T (sum over tiles V^T dM) G``."""
    cin, cout = x.shape[3], dy.shape[3]
    th, tw, bands = _band_rows(x, max(cin, cout), max_band_bytes)
    with tf.control_dependencies([dy]):  # else the executor recomputes the tiles early
        xp = _pad_to_tiles(x, th, tw)
    dyp = tf.pad(dy, [[0, 0], [0, th * TILE - dy.shape[1]], [0, tw * TILE - dy.shape[2]], [0, 0]])
    du = tf.add_n([tf.matmul(_input_transform(xb),
                             _output_transform_adjoint(dyp[:, r * TILE:(r + k) * TILE]),
                             transpose_a=True)
                   for (r, k), xb in zip(bands, _bands(xp, bands))])
    return _sandwich(tf.constant(_G.T, du.dtype), tf.reshape(du, [ALPHA, ALPHA, cin, cout]))


def _pad_to_tiles(x, th, tw):
    """One pixel of "same" padding on top/left; bottom/right up to ``th`` x ``tw`` whole
    tiles plus one: [N, H, W, C] -> [N, 4 th + 2, 4 tw + 2, C]."""
    return tf.pad(x, [[0, 0], [1, th * TILE + 1 - x.shape[1]], [1, tw * TILE + 1 - x.shape[2]],
                      [0, 0]])


def _bands(xp, bands):
    """The padded input's bands of tile rows ``(first, count)``, each with the 2 rows it
    shares with the next: [N, 4 count + 2, 4 tw + 2, C] each."""
    return [xp[:, r * TILE:(r + k) * TILE + 2] for r, k in bands]


def _input_transform(xb):
    """Padded tile rows [N, 4 k + 2, 4 tw + 2, Cin] -> V [36, N k tw, Cin], each 6x6 tile's
    ``BT d BT^T``: each channel as its own image through a stride-4 6x6 conv with 36
    outputs (one per tile position), then tile-position-major for the matrix products."""
    n, (k, tw), cin = tf.shape(xb)[0], _tiles(xb), xb.shape[3]
    planes = tf.reshape(tf.transpose(xb, [0, 3, 1, 2]), [n * cin, xb.shape[1], xb.shape[2], 1])
    v = tf.nn.conv2d(planes, tf.constant(_INPUT_FILTER, xb.dtype), [1, TILE, TILE, 1], "VALID")
    v = tf.transpose(tf.reshape(v, [n, cin, k * tw, ALPHA * ALPHA]), [3, 0, 2, 1])
    return tf.reshape(v, [ALPHA * ALPHA, n * k * tw, cin])


def _output_transform(m, xb):
    """Products M [36, N k tw, Cout] of the tiles of ``xb`` -> outputs [N, 4 k, 4 tw, Cout]
    (``AT M AT^T`` per tile)."""
    n, (k, tw), cout = tf.shape(xb)[0], _tiles(xb), m.shape[-1]
    y = tf.matmul(tf.constant(_OUTPUT_MATRIX, m.dtype), tf.reshape(m, [ALPHA * ALPHA, -1]))
    y = tf.transpose(tf.reshape(y, [TILE, TILE, n, k, tw, cout]), [2, 3, 0, 4, 1, 5])
    return tf.reshape(y, [n, k * TILE, tw * TILE, cout])


def _output_transform_adjoint(dy):
    """The gradient w.r.t. M of :func:`_output_transform`, given its output's gradient
    ``dy`` [N, 4 k, 4 tw, Cout]: [36, N k tw, Cout]."""
    n, k, tw, cout = tf.shape(dy)[0], dy.shape[1] // TILE, dy.shape[2] // TILE, dy.shape[3]
    d = tf.transpose(tf.reshape(dy, [n, k, TILE, tw, TILE, cout]), [2, 4, 0, 1, 3, 5])
    dm = tf.matmul(tf.constant(_OUTPUT_MATRIX.T, dy.dtype), tf.reshape(d, [TILE * TILE, -1]))
    return tf.reshape(dm, [ALPHA * ALPHA, n * k * tw, cout])


def _tiles(xb):
    """(tile rows, tile columns) of padded rows [N, 4 k + 2, 4 tw + 2, C]."""
    return (xb.shape[1] - 2) // TILE, (xb.shape[2] - 2) // TILE


def winograd_pays(height, width, in_channels, out_channels):
    """Whether F(4, 3) beats oneDNN's direct float32 conv on a CPU for this layer.

    ``python bench/winograd.py`` on a 2-core AMD EPYC (AVX-512), batch 1, forward, three
    runs: 256->256 at 64x64 1.5-1.8x faster, at 50x84 1.3-1.7x, at 32x32 0.9-1.3x, at
    25x42 0.8-1.2x; 256->720 at 64x64 2.2-2.3x; 128->128 at 64x64 1.2-1.3x; slower at
    16x16 (0.5-0.8x) and for 64 channels (0.9x), where the transforms and transposes cost
    more than the products save. Forward + backward (``--backward``, batch 2) gains less:
    256->720 1.4-1.6x, 256->256 0.8-1.1x, 128->128 0.5-0.7x; the ResNet-50-FPN training step is
    still faster under this rule (3.24-3.34 s against 3.86-3.90 s at 512x512). The rule
    keeps layers of >= 128 channels each way and >= 2^18 outputs per image.
    """
    if None in (height, width):
        return False
    return (min(in_channels, out_channels) >= 128
            and height * width * out_channels >= 2 ** 18)
