"""The paper's ablations (RetinaMask, Tables 1-3) as training runs that differ in one thing.

Every variant is a set of config overrides on top of the same base config; the runs are
``main.py --mode=train_and_eval`` processes, one per (dataset config, variant, seed), each
in its own model_dir. A run whose metrics exist is not run again, so an interrupted
ablation resumes where it stopped (a run killed midway resumes from its last checkpoint).
``summarize`` turns the metrics into mean / sample std / min / max over seeds, and
``write_report`` into JSON, markdown tables (one per paper table) and an AP plot with
error bars.
"""

import glob
import json
import os
import re
import statistics
import subprocess
import sys

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_NO_MASK = {"model.mask_head.enabled": False}
_FIXED = {"loss.box_loss": "smooth_l1"}
_SELF_ADJUSTING = {"loss.box_loss": "self_adjusting"}

# name -> overrides. "retinanet": IoU 0.5/0.4 matching, smooth L1 with beta 0.11, no mask
# head; "best_match_t": + best matching at threshold t; "fixed_beta_b" / "self_adjusting_b":
# the box loss with best matching 0.0 (beta_hat b when self-adjusting); "retinamask": all
# three changes.
VARIANTS = {
    "retinanet": {**_NO_MASK, **_FIXED, "loss.beta": 0.11, "matcher.best_match_threshold": None},
    **{f"best_match_{t}": {**_NO_MASK, **_FIXED, "loss.beta": 0.11,
                           "matcher.best_match_threshold": t}
       for t in (0.5, 0.4, 0.3, 0.2, 0.0)},
    "fixed_beta_1.0": {**_NO_MASK, **_FIXED, "loss.beta": 1.0, "matcher.best_match_threshold": 0.0},
    **{f"self_adjusting_{b}": {**_NO_MASK, **_SELF_ADJUSTING, "loss.beta": b,
                               "matcher.best_match_threshold": 0.0} for b in (0.11, 1.0)},
    "retinamask": {**_SELF_ADJUSTING, "loss.beta": 0.11, "matcher.best_match_threshold": 0.0,
                   "model.mask_head.enabled": True},
}
# The paper's tables as rows of variants (fixed_beta_0.11 is best_match_0.0).
TABLES = {
    "Table 1: best matching (threshold)": [
        "retinanet", "best_match_0.5", "best_match_0.4", "best_match_0.3", "best_match_0.2",
        "best_match_0.0"],
    "Table 2: box loss (with best matching 0.0)": [
        "best_match_0.0", "fixed_beta_1.0", "self_adjusting_0.11", "self_adjusting_1.0"],
    "Table 3: mask head (with both changes)": ["self_adjusting_0.11", "retinamask"],
}
# The paper's bbox AP (COCO minival, ResNet-50-FPN, 1x) for the same rows, per table
# (Fu, Shvets, Berg 2019, Tables 1-3): Table 1 has no row without best matching; Table 3's base is
# 36.2, not Table 2's 36.6.
PAPER_AP = {
    "Table 1: best matching (threshold)": {
        "best_match_0.5": 35.5, "best_match_0.4": 36.0, "best_match_0.3": 36.1,
        "best_match_0.2": 36.1, "best_match_0.0": 36.2},
    "Table 2: box loss (with best matching 0.0)": {
        "best_match_0.0": 36.2, "fixed_beta_1.0": 35.3, "self_adjusting_0.11": 36.6,
        "self_adjusting_1.0": 36.4},
    "Table 3: mask head (with both changes)": {"self_adjusting_0.11": 36.2, "retinamask": 36.9},
}


def _yaml_value(value):
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def run_dir(out_dir, dataset, variant, seed):
    return os.path.join(out_dir, dataset, variant, f"seed{seed}")


def latest_metrics(model_dir):
    """The last full evaluation's metrics JSON of a run (highest step; partial evaluations,
    ``metrics_<step>_first<N>.json``, do not count), or None."""
    steps = {}
    for path in glob.glob(os.path.join(model_dir, "eval", "metrics_*.json")):
        match = re.fullmatch(r"metrics_(\d+)\.json", os.path.basename(path))
        if match:
            steps[int(match.group(1))] = path
    if not steps:
        return None
    path = steps[max(steps)]
    with open(path) as f:
        return json.load(f)


def run_one(config_paths, model_dir, variant, seed, extra_overrides=(), python=sys.executable,
            log=print):
    """Trains and evaluates one (variant, seed) unless its metrics exist; returns them.
    Raises RuntimeError naming the run and its log when the training process fails."""
    done = latest_metrics(model_dir)
    if done is not None:
        log(f"[ablation] {model_dir}: done (step {done['step']})")
        return done
    overrides = {**VARIANTS[variant], "train.seed": seed}
    cmd = [python, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "main.py"),
           "--mode=train_and_eval", f"--model_dir={model_dir}", "--noexport"]
    cmd += [f"--config={c}" for c in config_paths]
    cmd += [f"--override={k}={_yaml_value(v)}" for k, v in overrides.items()]
    cmd += [f"--override={o}" for o in extra_overrides]
    os.makedirs(model_dir, exist_ok=True)
    log_path = os.path.join(model_dir, "ablation.log")
    log(f"[ablation] {model_dir}: training ({variant}, seed {seed}); log {log_path}")
    with open(log_path, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    metrics = latest_metrics(model_dir)
    if proc.returncode != 0 or metrics is None:
        raise RuntimeError(f"ablation run {model_dir} failed (exit {proc.returncode}); "
                           f"see {log_path}")
    return metrics


def summarize(values):
    """mean, sample std (0 for one value), min, max and n of a list of numbers; None when
    the metric is absent (nothing to score, e.g. APs without small objects)."""
    if any(v is None for v in values):
        return None
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def collect(results):
    """results: {(dataset, variant): [metrics JSON per seed]} -> rows with a summary per
    metric for bbox (and segm where the runs have it) and the per-seed bbox AP in seed
    order (``AP_per_seed``, for differences paired by seed)."""
    rows = []
    for (dataset, variant), runs in results.items():
        row = {"dataset": dataset, "variant": variant, "seeds": len(runs),
               "AP_per_seed": [float(r["bbox"]["AP"]) for r in runs]}
        for kind in ("bbox", "segm"):
            if all(kind in r for r in runs):
                row[kind] = {m: summarize([r[kind][m] for r in runs]) for m in METRICS}
        rows.append(row)
    return rows


def paired_delta(row, base):
    """bbox AP of ``row`` minus ``base``'s, seed by seed (same init and data order, so
    most of the seed-to-seed spread cancels): the summary of the differences, or None when
    the two were not run on the same number of seeds. ``positive``: on how many seeds
    ``row`` is ahead."""
    if row is base or len(row["AP_per_seed"]) != len(base["AP_per_seed"]):
        return None
    diffs = [a - b for a, b in zip(row["AP_per_seed"], base["AP_per_seed"])]
    return {**summarize(diffs), "positive": sum(d > 0 for d in diffs)}


def markdown(rows):
    """One table per paper table and dataset: mean +- std over seeds (bbox; mask AP for
    runs with the mask head), the AP difference to the table's first row paired by seed
    (mean +- std, and on how many seeds it is positive), and the paper's COCO AP with its
    difference to the table's first row that has a paper figure."""
    lines = []
    datasets = sorted({r["dataset"] for r in rows})
    for title, variants in TABLES.items():
        for dataset in datasets:
            present = [next(r for r in rows if r["dataset"] == dataset and r["variant"] == v)
                       for v in variants if any(r["dataset"] == dataset and r["variant"] == v
                                                for r in rows)]
            if not present:
                continue
            paper = PAPER_AP.get(title, {})
            base_row = next((r for r in present if r["variant"] in paper), None)
            paper_base = paper[base_row["variant"]] if base_row else None
            lines += [f"**{title}, {dataset}**", "",
                      "| variant | seeds | " + " | ".join(METRICS) + " | mask AP "
                      f"| ΔAP vs {present[0]['variant']}, paired (seeds > 0) | paper AP (Δ) |",
                      "|---|---|" + "---|" * (len(METRICS) + 3)]
            for r in present:
                cells = [f"{r['bbox'][m]['mean']:.3f} ± {r['bbox'][m]['std']:.3f}"
                         if r["bbox"][m] else "-" for m in METRICS]
                mask = (f"{r['segm']['AP']['mean']:.3f} ± {r['segm']['AP']['std']:.3f}"
                        if "segm" in r else "-")
                delta = paired_delta(r, present[0])
                if delta is not None:
                    delta = (f"{delta['mean']:+.3f} ± {delta['std']:.3f} "
                             f"({delta['positive']}/{delta['n']})")
                ours = f"{r['variant']} | {r['seeds']} | " + " | ".join(cells) + f" | {mask}"
                p_ap = paper.get(r["variant"])
                p_cell = "-" if p_ap is None else (
                    f"{p_ap:.1f}" if r is base_row else f"{p_ap:.1f} ({p_ap - paper_base:+.1f})")
                lines.append(f"| {ours} | {delta or '-'} | {p_cell} |")
            lines.append("")
    return lines


def plot(rows, path):
    """bbox AP per variant (mean, error bars = min..max over seeds), one panel per dataset."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == dataset]
        names = [r["variant"] for r in mine]
        mean = [r["bbox"]["AP"]["mean"] for r in mine]
        low = [m - r["bbox"]["AP"]["min"] for m, r in zip(mean, mine)]
        high = [r["bbox"]["AP"]["max"] - m for m, r in zip(mean, mine)]
        ax.bar(range(len(mine)), mean, yerr=[low, high], capsize=4, color="tab:blue")
        ax.set_xticks(range(len(mine)), names, rotation=45, ha="right")
        ax.set_ylabel("bbox AP (mean, min..max over seeds)")
        ax.set_title(dataset)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(rows, out_dir, meta=None):
    """ablation.json (rows + meta), ablation.md and, with matplotlib, ablation_ap.png."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "ablation.json"), "w") as f:
        json.dump({"meta": meta or {}, "rows": rows}, f, indent=2)
    text = "\n".join(markdown(rows))
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write(text + "\n")
    paths = {"json": os.path.join(out_dir, "ablation.json"),
             "markdown": os.path.join(out_dir, "ablation.md")}
    try:
        paths["plot"] = plot(rows, os.path.join(out_dir, "ablation_ap.png"))
    except ImportError:
        pass
    return paths, text
