"""The torch-free reader of PyTorch checkpoints: files written by torch itself (zip and the
legacy format of 2019's releases), our writer's round trip, and files it must refuse."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from retinamask_tf.weights import pth

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")

# What tests/weights/golden/tiny_{zip,legacy}.pth hold (written by torch.save).
EXPECTED = {
    "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
    "t.weight": np.arange(6, dtype=np.float32).reshape(2, 3).T,  # a transposed view
    "view": np.arange(10, dtype=np.float64)[3:7],  # an offset into a bigger storage
    "half": np.array([0.5, -2.0], np.float16),
    "bf16": np.array([1.5, -3.0], np.float32),  # bfloat16 read as float32
    "count": np.array(7, np.int64),
    "bn.num_batches_tracked": np.array(3, np.int64),
}


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_reads_files_torch_wrote(name):
    state = pth.read_state_dict(os.path.join(GOLDEN, name))
    # tiny_zip holds {"model": {"module." + key: ...}, "iteration": ...} as training
    # checkpoints of the released code do: the state dict is found, the prefix removed.
    assert list(state) == list(EXPECTED)
    for key, want in EXPECTED.items():
        assert state[key].dtype == want.dtype, key
        assert state[key].shape == want.shape, key
        np.testing.assert_array_equal(state[key], want, err_msg=key)


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "b": rng.standard_normal(5),  # float64
              "scalar": np.array(2.5, np.float32), "ids": np.arange(7, dtype=np.int64),
              "flags": np.array([True, False]), "f16": np.ones((2, 2), np.float16),
              "strided": rng.standard_normal((3, 4)).astype(np.float32).T}
    path = pth.write_state_dict(str(tmp_path / "x.pth"), arrays)
    assert zipfile.is_zipfile(path)
    back = pth.read_state_dict(path)
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)


def test_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        pth.read_state_dict(str(tmp_path / "missing.pth"))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(pth.CheckpointFormatError, match="notes.pth"):
        pth.read_state_dict(str(text))
    # A pickle that would run code on load: refused, naming what it asked for.
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Call()}, protocol=2))
    with pytest.raises(pth.CheckpointFormatError, match=r"asks for (os|posix)\.system"):
        pth.read_state_dict(str(evil))
    empty = tmp_path / "empty.pth"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"note": "no tensors"}, protocol=2))
    with pytest.raises(pth.CheckpointFormatError, match="no tensors"):
        pth.read_state_dict(str(empty))


class _Call:
    def __reduce__(self):
        return (os.system, ("true",))
