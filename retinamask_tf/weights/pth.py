"""PyTorch checkpoint files (``.pth``/``.pt``) read and written with NumPy only.

A PyTorch file is a pickle whose tensors point at storages kept beside it: in a zip
archive (``<name>/data.pkl`` + ``<name>/data/<key>``, PyTorch >= 1.6) or, in the legacy
format of older releases (the 2019 RetinaMask checkpoints), in one stream after the
pickle. Only plain containers of tensors and numbers are unpickled: any other class in
the file is refused (a checkpoint cannot run code on load), which is what
``torch.load(weights_only=True)`` allows too.

``read_state_dict(path)`` gives ``{name: np.ndarray}``; ``write_state_dict(path, arrays)``
writes a zip-format file that ``torch.load`` reads (used by the tests, which run without
torch).
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# storage class name -> NumPy dtype (bfloat16 is read as float32, see _bfloat16_to_float32)
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# torch dtypes a pickle may name (e.g. in metadata); read as their names
_TORCH_DTYPES = frozenset({"float32", "float", "float64", "double", "float16", "half",
                           "bfloat16", "int64", "long", "int32", "int", "int16", "int8",
                           "uint8", "bool"})


class CheckpointFormatError(ValueError):
    """A file that is not a PyTorch checkpoint this reader understands (names the file)."""


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES.get(name)


class _Storage:
    """A flat array of one storage; tensors are strided views of it."""

    def __init__(self, array):
        self.array = array


def _bfloat16_to_float32(raw):
    return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)


def _as_array(raw, dtype):
    if isinstance(dtype, str):  # bfloat16
        return _bfloat16_to_float32(raw)
    return np.frombuffer(raw, dtype).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    flat = storage.array
    if not size:
        return np.array(flat[offset])
    itemsize = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view, order="C")


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


def _allowed(rebuild):
    return {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild,
        ("torch._utils", "_rebuild_tensor"): rebuild,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("torch", "Size"): tuple,
    }


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, path, load_storage, rebuild=_rebuild_tensor):
        super().__init__(stream)
        self._path = path
        self._load_storage = load_storage
        self._allowed = _allowed(rebuild)

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return name
        raise CheckpointFormatError(
            f"{self._path}: the checkpoint asks for {module}.{name}, which is not a tensor; "
            "only tensors, numbers and plain containers are read (no code runs on load)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointFormatError(f"{self._path}: unknown persistent id {pid!r}")
        return self._load_storage(pid)


def _dtype_of(storage_type, path):
    dt = storage_type.dtype if isinstance(storage_type, _StorageType) else None
    if dt is None:
        name = getattr(storage_type, "name", storage_type)
        raise CheckpointFormatError(f"{path}: storage type {name!r} is not supported")
    return dt


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise CheckpointFormatError(f"{path}: a zip file without data.pkl is not a PyTorch "
                                        "checkpoint")
        root = pkl[0][: -len("data.pkl")]
        cache = {}

        def load_storage(pid):
            # ('storage', storage_type, key, location, numel)
            _, storage_type, key, _, _ = pid[:5]
            if key not in cache:
                dtype = _dtype_of(storage_type, path=path)
                raw = archive.read(f"{root}data/{key}")
                cache[key] = _Storage(_as_array(raw, dtype))
            return cache[key]

        with archive.open(pkl[0]) as f:
            return _Unpickler(io.BytesIO(f.read()), path, load_storage).load()


def _read_legacy(path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (neither a zip "
                                        "archive nor the legacy format)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        pending = {}  # key -> (dtype, list of (_Storage, offset, numel) views)

        def load_storage(pid):
            # ('storage', storage_type, root_key, location, numel, view_metadata)
            _, storage_type, key, _, _, view = (tuple(pid) + (None,))[:6]
            dtype = _dtype_of(storage_type, path=path)
            entry = pending.setdefault(key, [dtype, _Storage(None), []])
            if view is None:
                return entry[1]
            _, offset, numel = view  # (view key, offset, size)
            sub = _Storage(None)
            entry[2].append((sub, offset, numel))
            return sub

        lazy = lambda storage, offset, size, stride, *_: _LazyTensor(storage, offset, size, stride)  # noqa: E731
        result = _Unpickler(f, path, load_storage, rebuild=lazy).load()
        keys = pickle.load(f)
        for key in keys:
            dtype, storage, views = pending[key]
            (numel,) = struct.unpack("<q", f.read(8))
            size = 2 if isinstance(dtype, str) else np.dtype(dtype).itemsize
            raw = f.read(numel * size)
            if len(raw) != numel * size:
                raise CheckpointFormatError(f"{path}: truncated (storage {key})")
            storage.array = _as_array(raw, dtype)
            for sub, offset, count in views:
                sub.array = storage.array[offset:offset + count]
    return _resolve(result)


def read_state_dict(path):
    """``{name: np.ndarray}`` of a PyTorch checkpoint, without torch.

    Accepts a bare state dict, or a training checkpoint holding one under ``model`` or
    ``state_dict`` (maskrcnn-benchmark saves ``{"model": ..., "optimizer": ...}``);
    a ``module.`` prefix (DistributedDataParallel) is removed. Raises
    ``CheckpointFormatError`` naming the file when it is not one.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        obj = _read_zip(path)
    else:
        try:
            obj = _read_legacy(path)
        except (pickle.UnpicklingError, EOFError, struct.error) as e:
            with open(path, "rb") as f:
                head = f.read(8)
            raise CheckpointFormatError(
                f"{path}: not a PyTorch checkpoint (a file written by torch.save, e.g. a "
                f"downloaded .pth): its {os.path.getsize(path)} bytes begin {head!r}") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    out = collections.OrderedDict()
    for name, value in obj.items():
        if not isinstance(value, np.ndarray):
            continue  # e.g. metadata strings or counters that are not tensors
        name = name[len("module."):] if name.startswith("module.") else name
        out[name] = value
    if not out:
        raise CheckpointFormatError(f"{path}: no tensors in the state dict")
    return out


class _LazyTensor:
    """A legacy-format tensor whose storage bytes come after the pickle."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def build(self):
        return _rebuild_tensor(*self.args)


def _resolve(obj):
    if isinstance(obj, _LazyTensor):
        return obj.build()
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items()) if isinstance(
            obj, collections.OrderedDict) else {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------- writing

_WRITE_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.int8): "CharStorage", np.dtype(np.bool_): "BoolStorage"}


class _Global:
    """Pickled as a GLOBAL reference to ``module.name``, which is never imported here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pragma: no cover - save_reduce wants a callable
        raise RuntimeError(f"{self.module}.{self.name} is only written, never called")


class _TensorRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _StorageRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Pickler(pickle._Pickler):  # the pure-Python pickler: save_global can be replaced
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", _Global("torch", _WRITE_STORAGE[obj.array.dtype]), obj.key,
                    "cpu", int(obj.array.size))
        return None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        if isinstance(obj, _TensorRef):
            a = obj.array
            stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
            self.save_reduce(_Global("torch._utils", "_rebuild_tensor_v2"),
                             (_StorageRef(obj.key, a), 0, tuple(a.shape), stride, False,
                              collections.OrderedDict()), obj=None)
            return
        super().save(obj, save_persistent_id)


def write_state_dict(path, arrays, archive_name="archive"):
    """Writes ``{name: array}`` as a zip-format PyTorch state dict (``torch.load`` reads it).

    Arrays are stored C-contiguous in their own dtype (float32, float64, float16, int64,
    int32, uint8, int8, bool)."""
    items = collections.OrderedDict()
    storages = []
    for i, (name, value) in enumerate(arrays.items()):
        a = np.array(value, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if a.dtype not in _WRITE_STORAGE:
            raise TypeError(f"{name}: dtype {a.dtype} cannot be written")
        items[name] = _TensorRef(str(i), a)
        storages.append((str(i), a))
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(items)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", buf.getvalue())
        archive.writestr(f"{archive_name}/byteorder", "little")
        for key, a in storages:
            archive.writestr(f"{archive_name}/data/{key}", a.tobytes())
        archive.writestr(f"{archive_name}/version", "3\n")
    return path
