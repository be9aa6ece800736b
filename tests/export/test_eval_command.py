"""``main.py --mode=eval`` on a finished run: scores the latest checkpoint (bbox and mask
AP), takes eval overrides without writing them into the run's config.yaml, and says so
when there is no checkpoint."""

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_eval_mode_scores_the_checkpoint_and_leaves_the_run_alone(trained_dir, tmp_path):
    model_dir, trainer = trained_dir
    config_path = os.path.join(model_dir, "config.yaml")
    before = open(config_path).read()
    res = _main("--mode=eval", f"--model_dir={model_dir}")
    assert res.returncode == 0, res.stderr[-2000:]
    full_path = os.path.join(model_dir, "eval", "metrics_4.json")
    full = open(full_path).read()
    assert json.loads(full)["num_images"] == 12 and not json.loads(full)["partial"]
    assert "COCO bbox on 12 val images (step 4)" in res.stdout

    # A partial evaluation goes to its own file and never replaces the full one.
    res = _main("--mode=eval", f"--model_dir={model_dir}", "--override=eval.max_images=3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "COCO bbox on the first 3 val images (step 4)" in res.stdout
    assert "COCO segm on the first 3 val images (step 4)" in res.stdout
    metrics = json.load(open(os.path.join(model_dir, "eval", "metrics_4_first3.json")))
    assert metrics["num_images"] == 3 and metrics["step"] == 4 and metrics["partial"]
    assert f"AP {metrics['bbox']['AP']:.3f}" in res.stdout
    assert open(full_path).read() == full
    assert open(config_path).read() == before  # the override is not written into the run

    empty = tmp_path / "no_checkpoint"
    empty.mkdir()
    for name in ("config.yaml", "label_map.json"):
        shutil.copy(os.path.join(model_dir, name), empty / name)
    res = _main("--mode=eval", f"--model_dir={empty}")
    assert res.returncode != 0 and "no checkpoint in" in res.stderr + res.stdout
