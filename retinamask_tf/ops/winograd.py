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
    cin, cout = kernel.shape[2], kernel.shape[3]
    g = tf.constant(_G, kernel.dtype)
    # Two matrix products with no transposes: rows (u -> a), then columns (v -> b).
    rows = tf.reshape(tf.matmul(g, tf.reshape(kernel, [3, 3 * cin * cout])), [ALPHA, 3, cin * cout])
    u = tf.matmul(g[tf.newaxis], rows)                                  # [6, 6, Cin * Cout]
    return tf.reshape(u, [ALPHA * ALPHA, cin, cout])


def winograd_conv3x3(x, u, max_band_bytes=2 ** 25):
    """``tf.nn.conv2d(x, k, 1, "SAME")`` for ``u = winograd_kernel(k)``.

    Args:
      x: [N, H, W, Cin] with static H and W.
      u: [36, Cin, Cout] from :func:`winograd_kernel`, same dtype as ``x``.
      max_band_bytes: the transformed tiles of a large input are computed in bands of tile
        rows, each band's [36, tiles, max(Cin, Cout)] products under this many bytes (for
        a static batch; 1 image otherwise), which bounds the peak memory without slowing
        the products down.
    Returns:
      [N, H, W, Cout].
    """
    h, w, cin = x.shape[1], x.shape[2], x.shape[3]
    if h is None or w is None:
        raise ValueError(f"winograd_conv3x3 needs static spatial sizes, got {x.shape}")
    th, tw = -(-h // TILE), -(-w // TILE)
    # One pixel of "same" padding on top/left; bottom/right up to whole tiles plus one.
    x = tf.pad(x, [[0, 0], [1, th * TILE + 1 - h], [1, tw * TILE + 1 - w], [0, 0]])
    row_bytes = ALPHA * ALPHA * tw * max(cin, u.shape[-1]) * x.dtype.size * (x.shape[0] or 1)
    rows = max(1, min(th, max_band_bytes // row_bytes))
    bands = [_tile_rows(x[:, r * TILE:(r + min(rows, th - r)) * TILE + 2], u)
             for r in range(0, th, rows)]
    y = bands[0] if len(bands) == 1 else tf.concat(bands, axis=1)
    return y[:, :h, :w]


def _tile_rows(x, u):
    """F(4, 3) of a padded input [N, 4 * th + 2, 4 * tw + 2, Cin] -> [N, 4 * th, 4 * tw, Cout]."""
    n = tf.shape(x)[0]
    th, tw, cin = (x.shape[1] - 2) // TILE, (x.shape[2] - 2) // TILE, x.shape[3]
    cout = u.shape[-1]
    # Input transform: each channel as its own image through a stride-4 6x6 conv with 36
    # outputs (one per tile position), then tile-position-major for the matrix products.
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [n * cin, x.shape[1], x.shape[2], 1])
    v = tf.nn.conv2d(planes, tf.constant(_INPUT_FILTER, x.dtype), [1, TILE, TILE, 1], "VALID")
    v = tf.transpose(tf.reshape(v, [n, cin, th * tw, ALPHA * ALPHA]), [3, 0, 2, 1])
    m = tf.matmul(tf.reshape(v, [ALPHA * ALPHA, n * th * tw, cin]), u)   # [36, P, Cout]
    y = tf.matmul(tf.constant(_OUTPUT_MATRIX, x.dtype), tf.reshape(m, [ALPHA * ALPHA, -1]))
    y = tf.transpose(tf.reshape(y, [TILE, TILE, n, th, tw, cout]), [2, 3, 0, 4, 1, 5])
    return tf.reshape(y, [n, th * TILE, tw * TILE, cout])


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
