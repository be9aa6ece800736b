"""The ablation runner: variants differ from each other only in what their table studies,
the summary statistics are right, and a small two-run ablation trains, reports and
resumes without training again."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from retinamask_tf import ablation
from retinamask_tf import config as C

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(variant):
    return C.to_dict(C.load_config([], [f"{k}={ablation._yaml_value(v)}"
                                        for k, v in ablation.VARIANTS[variant].items()]))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


@pytest.mark.parametrize("title,keys", [
    ("Table 1: best matching (threshold)", {"matcher.best_match_threshold"}),
    ("Table 2: box loss (with best matching 0.0)", {"loss.box_loss", "loss.beta"}),
    ("Table 3: mask head (with both changes)", {"model.mask_head.enabled"}),
])
def test_each_table_varies_only_what_it_studies(title, keys):
    rows = [_flat(_config(v)) for v in ablation.TABLES[title]]
    for row in rows[1:]:
        changed = {k for k in row if row[k] != rows[0][k]}
        assert changed and changed <= keys, (title, changed)


def test_variants_are_the_papers():
    retinanet, retinamask = _config("retinanet"), _config("retinamask")
    assert retinanet["matcher"]["best_match_threshold"] is None
    assert retinanet["loss"]["box_loss"] == "smooth_l1" and retinanet["loss"]["beta"] == 0.11
    assert not retinanet["model"]["mask_head"]["enabled"]
    assert retinamask["matcher"]["best_match_threshold"] == 0.0
    assert retinamask["loss"]["box_loss"] == "self_adjusting" and retinamask["loss"]["beta"] == 0.11
    assert retinamask["model"]["mask_head"]["enabled"]


def test_summarize_golden():
    s = ablation.summarize([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"], s["n"]) == (0.1, 0.3, 3)
    assert ablation.summarize([0.25])["std"] == 0.0
    assert ablation.summarize([None, None]) is None  # absent (COCOeval's -1), not 0


def test_markdown_paired_delta_and_paper_columns():
    def row(variant, aps):
        m = {k: ablation.summarize(aps) for k in ablation.METRICS}
        return {"dataset": "d", "variant": variant, "seeds": len(aps), "AP_per_seed": aps,
                "bbox": m}
    base, other = row("best_match_0.0", [0.10, 0.30, 0.20]), row("fixed_beta_1.0", [0.15, 0.32, 0.17])
    delta = ablation.paired_delta(other, base)
    # differences +0.05, +0.02, -0.03: mean +0.0133, sample std 0.0404
    assert delta["mean"] == pytest.approx(0.04 / 3) and delta["std"] == pytest.approx(0.040415, abs=1e-6)
    assert ablation.paired_delta(base, base) is None
    assert ablation.paired_delta(row("fixed_beta_1.0", [0.1, 0.2]), base) is None
    text = "\n".join(ablation.markdown([base, other]))
    # 0.15, 0.32, 0.17: mean 0.2133, sample std sqrt(0.017267 / 2) = 0.0929
    assert "| fixed_beta_1.0 | 3 | 0.213 ± 0.093 |" in text
    assert "| +0.013 ± 0.040 (2/3) | 35.3 (-0.9) |" in text
    assert "| best_match_0.0 | 3 |" in text and "| - | 36.2 |" in text
    # Table 1's first row (retinanet) has no paper figure: the paper's differences are
    # taken from the first row that has one.
    table1 = "\n".join(ablation.markdown([row("retinanet", [0.1, 0.2, 0.3]),
                                          row("best_match_0.5", [0.1, 0.2, 0.3]),
                                          row("best_match_0.4", [0.2, 0.2, 0.3])]))
    assert "| +0.000 ± 0.000 (0/3) | 35.5 |" in table1
    assert "| +0.033 ± 0.058 (1/3) | 36.0 (+0.5) |" in table1


def test_small_ablation_runs_reports_and_resumes(tiny_shapes, tmp_path):
    config = {
        "data": {"kind": "coco", "train_json": tiny_shapes["train_json"],
                 "train_images": tiny_shapes["train_images"], "val_json": tiny_shapes["val_json"],
                 "val_images": tiny_shapes["val_images"], "short_side": 128, "long_side": 128,
                 "max_instances": 8},
        "model": {"backbone": {"depth": 18, "width": 16, "norm": "batch_norm"},
                  "fpn": {"channels": 16}, "head": {"channels": 16, "num_convs": 1},
                  "mask_head": {"channels": 8, "num_convs": 1, "gt_mask_size": 32}},
        "train": {"batch_size": 2, "steps": 2, "warmup_steps": 1, "lr_drop_steps": [],
                  "checkpoint_every": 2},
        "eval": {"batch_size": 4}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "ablation"
    cmd = [sys.executable, os.path.join(REPO, "bench", "ablation.py"), "--configs", str(path),
           "--variants", "retinanet,retinamask", "--seeds", "0", "--out", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    report = json.load(open(out / "ablation.json"))
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"retinanet", "retinamask"}
    assert "segm" in rows["retinamask"] and "segm" not in rows["retinanet"]
    assert rows["retinanet"]["bbox"]["AP"]["n"] == 1
    saved = json.load(open(out / "tiny" / "retinanet" / "seed0" / "eval" / "metrics_2.json"))
    assert rows["retinanet"]["bbox"]["AP50"]["mean"] == saved["bbox"]["AP50"]
    text = (out / "ablation.md").read_text()
    assert "Table 1" in text and "Table 3" in text and "| retinamask | 1 |" in text
    assert (out / "ablation_ap.png").stat().st_size > 0
    written = yaml.safe_load(open(out / "tiny" / "retinanet" / "seed0" / "config.yaml"))
    assert written["matcher"]["best_match_threshold"] is None
    assert written["model"]["mask_head"]["enabled"] is False
    stamp = os.path.getmtime(out / "tiny" / "retinamask" / "seed0" / "eval" / "metrics_2.json")
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count(": done (step 2)") == 2
    assert os.path.getmtime(out / "tiny" / "retinamask" / "seed0" / "eval" / "metrics_2.json") == stamp


def test_latest_metrics_ignores_partial_evaluations(tmp_path):
    from retinamask_tf import ablation
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    assert ablation.latest_metrics(str(tmp_path)) is None
    for name, step in (("metrics_40.json", 40), ("metrics_300.json", 300),
                       ("metrics_300_first8.json", -1), ("metrics_900_first8.json", -2)):
        (eval_dir / name).write_text(json.dumps({"step": step}))
    assert ablation.latest_metrics(str(tmp_path))["step"] == 300
