"""COCO segmentations: checked all at once, and packed into compact bytes.

A COCO file's polygons, parsed by ``json``, are Python lists of Python floats: about 32
bytes a coordinate, four times the text they came from. The reader keeps each usable
segmentation packed instead (``pack_all``), so a dataset's memory follows its total
annotation size:

  polygons  ``b"P\\0\\0\\0"``, uint32 k, k uint64 coordinate counts, then the coordinates
            as float64, all little-endian (exactly the values the JSON held; 8 bytes a
            coordinate, about the size of their text); polygons of under 3 points are left
            out, as the rasteriser leaves them out;
  RLE       its JSON text (``{"size": ..., "counts": ...}``).

``unpack`` turns either back into what ``instance_masks`` rasterises, and also reads JSON
text of any segmentation (what TFRecords written by earlier versions hold); ``b""`` and
``b"null"`` are "no usable mask".

Polygons are checked in bulk: the coordinates of many annotations go into one float64
array and every check is a NumPy reduction over it, so that a COCO-sized file (860k
annotations) is checked in seconds, not minutes.
"""

import collections.abc
import itertools
import json
import math

import numpy as np

POLYGON_MAGIC = b"P\0\0\0"
NUMBER_TYPES = frozenset((int, float))  # the types of JSON numbers; bool is not one
# Annotations checked per NumPy batch: bounds the temporary arrays (a few MB).
_BATCH = 20000


def _is_count(value):
    """A non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def compressed_rle_counts(counts):
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``: 5 bits
    per character from '0', a continuation bit, sign extension, counts after the second
    stored as differences), or a string saying why it is not one. pycocotools itself does
    not check: garbage decodes to a mask of whatever memory follows."""
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "RLE counts are not ASCII"
    out, x, k = [], 0, 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return f"RLE counts hold the character {ch!r} (not a compressed RLE string)"
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
        x, k = 0, 0
    if k:
        return "RLE counts string ends inside a number"
    return out


def rle_problem(segmentation, height, width):
    """Why an RLE segmentation is unusable for an image of (height, width), or None: another
    size, counts that are not non-negative integers summing to height x width."""
    size = segmentation.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_count(v) for v in size)
            or list(size) != [height, width]):
        return f"RLE size {size} differs from the image size {[height, width]}"
    counts = segmentation.get("counts")
    if isinstance(counts, (str, bytes)):
        counts = compressed_rle_counts(counts)
        if isinstance(counts, str):
            return counts
    elif not isinstance(counts, list):
        return "RLE without counts"
    if not all(_is_count(v) for v in counts):
        return "RLE counts that are not non-negative integers"
    if sum(counts) != height * width:
        return f"RLE counts sum to {sum(counts)}, not height x width = {height * width}"
    return None


def as_float(value):
    """float(value), with an integer beyond float range as inf (the checks call it
    non-finite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _pack_polygons(segmentations, heights, widths, packed, problems):
    """Checks and packs one batch of polygon segmentations (each a list of lists of
    numbers) in place of ``packed[i]`` / ``problems[i]``; the checks, per polygon in order,
    the first failing one named: an odd number of coordinates, a non-finite coordinate, a
    coordinate far outside the image (pycocotools' rasteriser walks every pixel of each
    edge: a coordinate of 2**31 would take all memory); then per annotation: no polygon of
    >= 3 points, zero total area (shoelace)."""
    index = list(segmentations)
    lengths = [len(p) for i in index for p in segmentations[i]]
    counts = [len(segmentations[i]) for i in index]
    try:
        flat = np.fromiter(itertools.chain.from_iterable(
            p for i in index for p in segmentations[i]), np.float64, sum(lengths))
    except OverflowError:  # an integer beyond float range somewhere in the batch
        flat = np.array([as_float(v) for i in index for p in segmentations[i] for v in p],
                        np.float64)
    lengths = np.asarray(lengths, np.int64)
    n_poly = len(lengths)
    poly_ann = np.repeat(np.arange(len(index)), counts)  # batch annotation of each polygon
    poly_of = np.repeat(np.arange(n_poly), lengths)  # polygon of each coordinate
    limit = (4 * np.maximum(np.asarray([heights[i] for i in index], np.float64),
                            [widths[i] for i in index]) + 64)[poly_ann]
    nonfinite = np.bincount(poly_of, ~np.isfinite(flat), n_poly) > 0
    with np.errstate(invalid="ignore"):
        far = np.bincount(poly_of, np.abs(flat) > limit[poly_of], n_poly) > 0
    # Each polygon's first problem, in the order the checks are listed above.
    code = np.select([lengths % 2 == 1, nonfinite, far], [1, 2, 3], 0)
    messages = {1: "polygon with an odd number of coordinates",
                2: "polygon with non-finite coordinates", 3: "polygon far outside the image"}
    bad_polys = np.flatnonzero(code)
    bad_ann = np.zeros(len(index), bool)
    for p in bad_polys[::-1]:  # the first bad polygon of an annotation is written last
        problems[index[poly_ann[p]]] = messages[int(code[p])]
        bad_ann[poly_ann[p]] = True
    # Polygons kept: >= 3 points, of annotations without a problem (all of even length).
    keep = (lengths >= 6) & ~bad_ann[poly_ann]
    if keep.all():  # the usual batch: no copies
        kept_lengths, coords, kept_ann = lengths, flat, poly_ann
    else:
        kept_lengths, kept_ann = lengths[keep], poly_ann[keep]
        coords = flat[np.repeat(keep, lengths)]
    vertex_poly = np.repeat(np.arange(len(kept_lengths)), kept_lengths // 2)
    x, y = coords[0::2], coords[1::2]
    ends = np.cumsum(kept_lengths // 2)
    prev = np.arange(len(x)) - 1
    prev[ends - kept_lengths // 2] = ends - 1  # a polygon's first vertex follows its last
    twice_area = np.abs(np.bincount(vertex_poly, x * y[prev] - y * x[prev], len(kept_lengths)))
    area = np.bincount(kept_ann, 0.5 * twice_area, len(index))
    n_kept = np.bincount(kept_ann, minlength=len(index))
    good = ~bad_ann & (n_kept > 0) & (area > 0)
    for j in np.flatnonzero(~bad_ann & ~good):
        problems[index[j]] = ("polygon with fewer than 3 points" if n_kept[j] == 0
                              else "polygon with zero area")
    n_coords = np.bincount(kept_ann, kept_lengths, len(index)).astype(np.int64)
    size = np.where(good, 1 + n_kept + n_coords, 0)  # 8-byte words of each packed record
    start = np.cumsum(size) - size
    words = np.zeros(int(size.sum()), "<u8")
    words[start[good]] = (np.uint64(int.from_bytes(POLYGON_MAGIC, "little"))
                          | (n_kept[good].astype(np.uint64) << np.uint64(32)))
    used = good[kept_ann]  # kept polygons of annotations that are packed
    rank = np.arange(len(kept_ann)) - (np.cumsum(n_kept) - n_kept)[kept_ann]
    words[(start[kept_ann] + 1 + rank)[used]] = kept_lengths[used]
    coord_ann = np.repeat(kept_ann, kept_lengths)
    offset = np.arange(len(coords)) - (np.cumsum(n_coords) - n_coords)[coord_ann]
    used = good[coord_ann]
    words[(start[coord_ann] + 1 + n_kept[coord_ann] + offset)[used]] = (
        coords.astype("<f8").view("<u8")[used])
    for j in np.flatnonzero(good):
        packed[index[j]] = words[start[j]:start[j] + size[j]].tobytes()


def pack_all(segmentations, heights, widths):
    """Checks every segmentation and packs the usable ones (see the module doc).

    Args:
      segmentations: list of COCO segmentations as parsed from JSON (polygon lists, RLE
        dicts, None, or anything a broken file holds).
      heights, widths: the image size of each (lists of ints).
    Returns:
      (packed, problems): per segmentation, the packed bytes or None, and None or why it
      is unusable ("no segmentation", "polygon with zero area", "RLE size ... differs", ...).
    """
    n = len(segmentations)
    packed, problems = [None] * n, [None] * n
    polygons = {}
    for i, seg in enumerate(segmentations):
        kind = type(seg)
        if kind is list:
            if not seg:
                problems[i] = "empty polygon list"
            elif not (set(map(type, seg)) == {list} and NUMBER_TYPES.issuperset(
                    map(type, itertools.chain.from_iterable(seg)))):
                problems[i] = "polygon that is not a list of numbers"
            else:
                polygons[i] = seg
                if len(polygons) == _BATCH:
                    _pack_polygons(polygons, heights, widths, packed, problems)
                    polygons = {}
        elif kind is dict:
            problems[i] = rle_problem(seg, heights[i], widths[i])
            if problems[i] is None:
                counts = seg["counts"]  # bytes from pycocotools' encode, str from JSON
                packed[i] = json.dumps({"size": seg["size"], "counts": counts.decode("ascii")
                                        if isinstance(counts, bytes) else counts},
                                       separators=(",", ":")).encode()
        elif seg is None:
            problems[i] = "no segmentation"
        else:
            problems[i] = f"unknown segmentation format {kind.__name__}"
    if polygons:
        _pack_polygons(polygons, heights, widths, packed, problems)
    return packed, problems


def segmentation_problem(segmentation, height, width):
    """None if ``segmentation`` can be rasterised for an image of that size, else why not."""
    return pack_all([segmentation], [height], [width])[1][0]


def unpack(data):
    """Packed bytes (or JSON text) -> a list of float64 [2n] polygon arrays, an RLE dict,
    or None (None, ``b""``, ``b"null"``: no usable mask)."""
    if data is None:
        return None
    data = bytes(data)
    if data[:4] == POLYGON_MAGIC:
        k = int.from_bytes(data[4:8], "little")
        lengths = np.frombuffer(data, "<u8", k, 8).astype(np.int64)
        coords = np.frombuffer(data, "<f8", offset=8 + 8 * k).astype(np.float64, copy=False)
        return np.split(coords, np.cumsum(lengths)[:-1])
    if not data or data == b"null":
        return None
    return json.loads(data)


class PackedStore:
    """The packed segmentations of many annotations in one buffer, in the order they were
    added (``add``), with their offsets: no Python object per annotation, so that the
    store neither costs an object header per mask nor pins the memory the parsed file
    gave back. ``get(i)``: annotation ``i``'s packed bytes, or None."""

    def __init__(self):
        self.data = bytearray()
        self._ends = [np.zeros(1, np.int64)]
        self._offsets = None

    def add(self, packed):
        """Appends a chunk of packed segmentations (bytes or None each)."""
        lengths = np.fromiter((len(p) if p else 0 for p in packed), np.int64, len(packed))
        self._ends.append(len(self.data) + np.cumsum(lengths))
        self.data += b"".join(p for p in packed if p)
        self._offsets = None

    @property
    def offsets(self):
        """[n + 1] int64: annotation i's bytes are ``data[offsets[i]:offsets[i + 1]]``."""
        if self._offsets is None:
            self._offsets = np.concatenate(self._ends)
        return self._offsets

    def __len__(self):
        return len(self.offsets) - 1

    def get(self, i):
        a, b = self.offsets[i], self.offsets[i + 1]
        return bytes(memoryview(self.data)[a:b]) if b > a else None

    def has_mask(self, index):
        """[len(index)] bool: whether each of the annotations ``index`` has a packed mask."""
        return np.diff(self.offsets)[index] > 0


class SegmentationView(collections.abc.Sequence):
    """One image's packed segmentations (bytes or None each): its annotations ``index``
    (int array) of a ``PackedStore``. A list of bytes or None serves the same purpose."""

    __slots__ = ("store", "index")

    def __init__(self, store, index):
        self.store, self.index = store, index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.store.get(i) for i in self.index[k]]
        return self.store.get(self.index[k])

    def __eq__(self, other):  # equal to a list or view of the same entries
        if not isinstance(other, (list, tuple, SegmentationView)):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None


def flat_store(segmentation_lists):
    """(store, index): one ``PackedStore`` holding every entry of ``segmentation_lists``
    (``SegmentationView``s or lists, one per image) and each entry's index in it, in order.
    Views of one store are not copied."""
    stores = {id(s.store): s.store for s in segmentation_lists if isinstance(s, SegmentationView)}
    if len(stores) == 1 and all(isinstance(s, SegmentationView) for s in segmentation_lists):
        index = np.concatenate([s.index for s in segmentation_lists] + [np.zeros(0, np.int64)])
        return next(iter(stores.values())), index.astype(np.int64)
    store = PackedStore()
    for s in segmentation_lists:
        store.add(list(s))
    return store, np.arange(len(store), dtype=np.int64)
