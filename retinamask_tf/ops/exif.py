"""EXIF orientation in the graph: read the tag from encoded image bytes, apply it to pixels.

``tf.io.decode_image`` ignores EXIF, so a photo taken with the camera turned comes out in
its stored frame. The serving signature that takes encoded bytes reads the orientation
tag (0x0112) itself and shows the model the displayed view, as PIL's
``ImageOps.exif_transpose`` does for every other path (``image_io``).

Where the tag lives: in a JPEG, the TIFF block of the first ``APP1`` segment that starts
with ``Exif\\0\\0`` (segments are walked from SOI until the scan starts); in a PNG, the
``eXIf`` chunk (chunks are walked until the image data starts). The TIFF block's byte
order ("II" little, "MM" big endian) applies to every number in it; the orientation is a
SHORT stored inline in its IFD0 entry. Any malformed or missing piece gives 1 (as stored).
"""

import tensorflow as tf

ORIENTATION_TAG = 0x0112
MAX_SEGMENTS = 64  # JPEG segments / PNG chunks looked at before giving up
MAX_ENTRIES = 64  # IFD0 entries looked at
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bytes(data, pos, n):
    """[n] int32 bytes of ``data`` from ``pos`` (zeros past the end; pos clamped)."""
    length = tf.strings.length(data)
    pos = tf.clip_by_value(pos, 0, length)
    raw = tf.io.decode_raw(tf.strings.substr(data, pos, n), tf.uint8, fixed_length=n)
    return tf.cast(raw, tf.int32)


def _number(b, little):
    """Unsigned integer of bytes ``b`` [..., n] in the given byte order."""
    n = b.shape[-1]
    weights = tf.constant([256 ** i for i in range(n)], tf.int64)
    b = tf.cast(b, tf.int64)
    little_value = tf.reduce_sum(b * weights, axis=-1)
    big_value = tf.reduce_sum(b * weights[::-1], axis=-1)
    return tf.where(little, little_value, big_value)


def _tiff_offset(data):
    """Offset of the EXIF TIFF block in JPEG or PNG bytes, or -1."""
    length = tf.strings.length(data)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    is_png = tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE)
    start = tf.where(is_jpeg, 2, tf.where(is_png, 8, length))

    def cond(i, pos, found):
        return (i < MAX_SEGMENTS) & (found < 0) & (pos + 8 <= length)

    def body(i, pos, found):
        head = _bytes(data, pos, 4)
        ident = tf.strings.substr(data, tf.minimum(pos + 4, length), 6)
        chunk_type = tf.strings.substr(data, tf.minimum(pos + 4, length), 4)
        # JPEG: FF marker, 2-byte big-endian length (counting itself); FF FF is fill.
        jpeg_fill = tf.equal(head[1], 0xFF)
        jpeg_stop = tf.not_equal(head[0], 0xFF) | tf.equal(head[1], 0xDA) | tf.equal(head[1], 0xD9)
        jpeg_exif = tf.equal(head[1], 0xE1) & tf.equal(ident, b"Exif\x00\x00")
        jpeg_next = tf.where(jpeg_fill, pos + 1, pos + 2 + head[2] * 256 + head[3])
        # PNG: 4-byte big-endian data length, 4-byte type, data, 4-byte CRC.
        png_length = _number(head, tf.constant(False))
        png_stop = tf.equal(chunk_type, b"IDAT") | tf.equal(chunk_type, b"IEND") | (
            png_length > tf.cast(length, tf.int64))
        png_exif = tf.equal(chunk_type, b"eXIf")
        png_next = pos + 12 + tf.cast(tf.minimum(png_length, tf.cast(length, tf.int64)), tf.int32)
        exif = tf.where(is_jpeg, jpeg_exif & ~jpeg_fill, png_exif)
        stop = tf.where(is_jpeg, jpeg_stop & ~jpeg_fill, png_stop)
        found = tf.where(exif, tf.where(is_jpeg, pos + 10, pos + 8), found)
        nxt = tf.where(stop, length, tf.where(is_jpeg, jpeg_next, png_next))
        return i + 1, nxt, found

    _, _, found = tf.while_loop(cond, body, (tf.constant(0), start, tf.constant(-1)))
    return found


def exif_orientation(data):
    """The EXIF orientation (1..8) of one encoded image (scalar string); 1 when it has none
    (not JPEG/PNG, no EXIF, no tag, a malformed block or a value outside 1..8).

    Returns:
      int32 scalar.
    """
    data = tf.convert_to_tensor(data, tf.string)
    tiff = _tiff_offset(data)
    header = _bytes(data, tiff, 8)
    little = tf.equal(header[0], 0x49) & tf.equal(header[1], 0x49)
    big = tf.equal(header[0], 0x4D) & tf.equal(header[1], 0x4D)
    ifd = tf.cast(_number(header[4:8], little), tf.int32)
    count = tf.cast(_number(_bytes(data, tiff + ifd, 2), little), tf.int32)
    entries = tf.reshape(_bytes(data, tiff + ifd + 2, 12 * MAX_ENTRIES), [MAX_ENTRIES, 12])
    tags = _number(entries[:, 0:2], little)
    types = _number(entries[:, 2:4], little)
    values = _number(entries[:, 8:10], little)
    hit = (tf.range(MAX_ENTRIES) < count) & tf.equal(tags, ORIENTATION_TAG) & tf.equal(types, 3)
    value = tf.cast(tf.reduce_max(tf.where(hit, values, 0)), tf.int32)
    ok = (tiff >= 0) & (little | big) & (value >= 1) & (value <= 8) & (ifd >= 8)
    return tf.where(ok, value, 1)


def apply_exif_orientation(image, orientation):
    """Stored pixels [H, W, C] -> the view an EXIF ``orientation`` (1..8) displays, as
    PIL's ``ImageOps.exif_transpose``; 1 (and anything outside 1..8) leaves the image.

    Every orientation is an optional transpose followed by optional left-right and
    top-bottom mirrors (6, "rotate 90 clockwise", is transpose + left-right). The
    transpose sits in a ``tf.cond``: as a plain op after the decoder's cast to float32,
    TF's graph optimizer moved it before the cast, onto uint8 pixels, for which oneDNN
    logged "oneDNN supports DT_UINT8 only on platforms with AVX-512" at every training.
    """
    o = tf.cast(orientation, tf.int32)
    transposed = (o >= 5) & (o <= 8)
    flip_lr = tf.reduce_any(tf.equal(o, [2, 3, 6, 7]))
    flip_ud = tf.reduce_any(tf.equal(o, [3, 4, 7, 8]))
    image = tf.cond(transposed, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    return tf.reverse(image, tf.boolean_mask([1, 0], tf.stack([flip_lr, flip_ud])))
