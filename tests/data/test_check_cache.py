"""Remembered image checks: checked once per file identity, kept when a check stops
halfway, a full verdict answers a header request, a changed file is checked again."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retinamask_tf.data import check_cache, coco, image_check, pipeline

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bad_images")
REAL_CHECK = image_check.check_image


def _records(tmp_path, n=12):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((20, 30, 3), i * 10, np.uint8)).save(folder / f"{i}.jpg")
    return [coco.ImageRecord(i + 1, str(folder / f"{i}.jpg"), 20, 30, np.zeros((0, 4), np.float32),
                             np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, np.int64), [])
            for i in range(n)]


class Stopped(Exception):
    """A check stopped halfway (a kill, a power cut)."""


class Counter:
    """Wraps ``image_check.check_image``, counting (and optionally failing after ``limit``)."""

    def __init__(self, limit=None):
        self.paths, self.limit = [], limit

    def __call__(self, path, *args):
        if self.limit is not None and len(self.paths) >= self.limit:
            raise Stopped("stopped")
        self.paths.append(os.path.basename(path))
        return REAL_CHECK(path, *args)


def test_each_file_is_checked_once_and_a_changed_one_again(tmp_path, monkeypatch):
    records, cache = _records(tmp_path), str(tmp_path / "cache")
    counter = Counter()
    monkeypatch.setattr(image_check, "check_image", counter)
    first = image_check.check_images(records, "full", cache)
    assert len(counter.paths) == 12 and all(c.problem is None for c in first)
    assert image_check.check_images(records, "full", cache) == first
    assert image_check.check_images(records, "header", cache) == first  # full answers header
    assert len(counter.paths) == 12
    # A file rewritten (new size and time) is checked again, and now found cut short.
    path = records[3].path
    data = open(path, "rb").read()
    os.remove(path)  # a new inode, as an editor or a copy makes
    open(path, "wb").write(data[:len(data) // 2])
    again = image_check.check_images(records, "full", cache)
    assert counter.paths[12:] == ["3.jpg"]
    assert again[3].kind == "unreadable image" and again[:3] == first[:3]


def test_a_header_verdict_does_not_answer_full(tmp_path, monkeypatch):
    records, cache = _records(tmp_path, 3), str(tmp_path / "cache")
    counter = Counter()
    monkeypatch.setattr(image_check, "check_image", counter)
    image_check.check_images(records, "header", cache)
    image_check.check_images(records, "full", cache)
    image_check.check_images(records, "full", cache)
    image_check.check_images(records, "header", cache)
    assert len(counter.paths) == 6


def test_a_check_stopped_halfway_keeps_what_it_did(tmp_path, monkeypatch):
    records, cache = _records(tmp_path), str(tmp_path / "cache")
    monkeypatch.setattr(check_cache, "FLUSH_EVERY", 4)
    monkeypatch.setattr(image_check, "check_image", Counter(limit=7))
    with pytest.raises(Stopped):
        image_check.check_images(records, "header", cache)
    counter = Counter()
    monkeypatch.setattr(image_check, "check_image", counter)
    image_check.check_images(records, "header", cache)
    assert sorted(counter.paths) == sorted(f"{i}.jpg" for i in range(7, 12))


def test_a_torn_line_is_checked_again_and_the_file_compacted(tmp_path, monkeypatch):
    records, cache = _records(tmp_path, 5), str(tmp_path / "cache")
    image_check.check_images(records, "header", cache)
    path = os.path.join(cache, check_cache.FILE_NAME)
    lines = open(path).read().splitlines()
    assert len(lines) == 5
    open(path, "w").write("\n".join(lines[:4]) + "\n" + lines[4][:20])  # killed mid-write
    counter = Counter()
    monkeypatch.setattr(image_check, "check_image", counter)
    image_check.check_images(records, "header", cache)
    assert counter.paths == ["4.jpg"]
    # Superseded lines are dropped once they are most of the file.
    for _ in range(3):
        open(path, "a").write(open(path).read())
    assert len(open(path).read().splitlines()) == 48
    monkeypatch.setattr(check_cache, "COMPACT_SLACK", 0)
    assert len(check_cache.VerdictCache(cache).entries) == 5
    assert len(open(path).read().splitlines()) == 5


def test_progress_counts_only_the_files_to_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(image_check, "PROGRESS_MIN", 0)
    ds = coco.load_coco(os.path.join(FIXTURES, "annotations.json"), FIXTURES)
    cache = str(tmp_path / "cache")
    pipeline.verify_images(ds, "full", cache, progress=True)
    assert f"Checking {len(ds.records)} image files (full; 0 remembered" in capsys.readouterr().out
    pipeline.verify_images(ds, "full", cache, progress=True)
    assert "Checking" not in capsys.readouterr().out  # nothing left to check


def test_worker_processes_give_the_same_verdicts(tmp_path, monkeypatch):
    """Many files are checked in spawned worker processes, a chunk at a time: same verdicts
    as in this thread, in the same order, bad files included."""
    ds = coco.load_coco(os.path.join(FIXTURES, "annotations.json"), FIXTURES)
    records = ds.records * 3
    here = image_check.check_images(records, "header")
    monkeypatch.setattr(image_check, "PROCESS_MIN", 1)
    monkeypatch.setattr(image_check, "CHUNK", 5)
    assert image_check.check_images(records, "header", str(tmp_path), num_workers=2) == here
    assert any(c.problem for c in here) and any(c.problem is None for c in here)


def test_workers_from_a_script_without_a_main_guard(tmp_path):
    """The workers are plain subprocesses: a user's script that calls the check at its top
    level (no ``if __name__ == "__main__"``) is not run again in them."""
    script = tmp_path / "user_script.py"
    script.write_text(
        "from retinamask_tf.data import coco, image_check\n"
        "image_check.PROCESS_MIN, image_check.CHUNK = 1, 4\n"
        f"ds = coco.load_coco({os.path.join(FIXTURES, 'annotations.json')!r}, {FIXTURES!r})\n"
        "checks = image_check.check_images(ds.records * 2, 'header', num_workers=2)\n"
        "print('ran', len(checks), sum(c.problem is None for c in checks))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["ran 26 16"]


def test_a_worker_that_dies_leaves_the_rest_to_this_process(tmp_path, monkeypatch, caplog):
    ds = coco.load_coco(os.path.join(FIXTURES, "annotations.json"), FIXTURES)
    here = image_check.check_images(ds.records, "header")
    monkeypatch.setattr(image_check, "PROCESS_MIN", 1)
    monkeypatch.setattr(image_check, "CHUNK", 3)
    monkeypatch.setattr(image_check, "WORKER", "retinamask_tf.no_such_module")
    with caplog.at_level("WARNING"):
        assert image_check.check_images(ds.records, "header", num_workers=2) == here
    assert "an image check worker stopped" in caplog.text and "no_such_module" in caplog.text
