"""main.py as a user meets it: --help, one-line errors naming the flag, --config only where
it is read, and run directories honoured by the modes that only read them."""

import json
import os
import subprocess
import sys

import pytest

from retinamask_tf import config as C
from retinamask_tf import run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_help_exits_zero_and_lists_the_modes():
    for flag in ("--help", "-h"):
        res = _main(flag)
        assert res.returncode == 0, res.stderr
        assert "--mode" in res.stdout and "train_and_eval" in res.stdout
        assert "--model_dir" in res.stdout and "--override" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--mode=eval"], "error: --mode=eval needs --model_dir"),
    (["--mode=predict"], "error: --mode=predict needs --model_dir (or --model, an export)"),
    (["--mode=predict", "--model_dir=x"], "error: --mode=predict needs --images"),
    (["--mode=import_weights", "--model_dir=x"], "needs --source and --weights"),
    (["--mode=eval", "--model_dir=x", "--config=configs/demo.yaml"],
     "error: --config is not read by --mode=eval"),
    (["--mode=export", "--model_dir=x", "--config=nope.yaml"], "error: --config=nope.yaml: no such file"),
    (["--mode=train", "--model_dir=x", "--config=nope.yaml"], "error: --config=nope.yaml: no such file"),
    (["--mode=plots", "--model_dir=x", "--override", "train.steps=3"], "--mode=plots takes no --override"),
    (["--mode=inspect_data", "--model_dir=/nonexistent/run"],
     "--mode=inspect_data needs --config, or a --model_dir holding a run's config.yaml"),
])
def test_a_missing_or_misplaced_flag_is_one_line(args, message):
    res = _main(*args)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_an_unknown_key_gets_the_closest_names(tmp_path):
    res = _main("--mode=train", f"--model_dir={tmp_path / 'run'}", "--config=configs/demo.yaml",
                "--override", "train.step=10")
    assert res.returncode == 2
    assert "unknown config key 'train.step'; did you mean 'train.steps'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not os.path.exists(tmp_path / "run" / "config.yaml")


def test_reading_modes_use_the_run_config_and_write_beside_it(tmp_path):
    """inspect_data given a run directory reads its config.yaml (its image size, not the
    defaults') and writes next to the run, not into it."""
    run = tmp_path / "run"
    config = C.load_config(["configs/demo.yaml"], [
        "data.builtin.num_train=12", "data.builtin.num_val=4", "data.builtin.image_size=128",
        "data.short_side=128", "data.long_side=128", f"data.builtin.cache_dir={tmp_path / 'cache'}",
        f"data.image_check_cache={tmp_path / 'cache'}"])
    run_dir.write_config(config, str(run))
    before = sorted(os.listdir(run))
    res = _main("--mode=inspect_data", f"--model_dir={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(os.listdir(run)) == before  # nothing written into the run
    out = tmp_path / "run-inspect"
    assert (out / "train").is_dir() and (out / "val").is_dir()
    assert "12 images" in res.stdout
    stats = json.load(open(out / "train" / "stats.json"))
    assert stats["image_size"] == [128, 128]  # the run's, not the default 1408 x 1408
    assert "model input 128x128" in res.stdout
