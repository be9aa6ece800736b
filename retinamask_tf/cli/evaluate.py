"""--mode=eval (and the evaluation half of train_and_eval): COCO bbox (+ segm) AP."""

import os

from retinamask_tf import run_dir
from retinamask_tf.data import pipeline
from retinamask_tf.evaluation.coco_evaluator import evaluate, fmt, format_table


def run(model_dir, overrides=(), val=None):
    """Restores the run's latest checkpoint (``run_dir.restore``: no training pipeline is
    built) and scores it on the val split (``val`` if already loaded, else read with the
    run's label map); prints the tables and returns the report. ``overrides``: eval and
    post-processing settings (they stay out of the run's config.yaml)."""
    restored = run_dir.restore(model_dir, overrides=tuple(overrides))
    config = restored.config
    if val is None:
        val = pipeline.load_val(config.data, run_dir.categories(restored.class_ids,
                                                                restored.class_names))
    report = evaluate(restored.model, val, config, out_dir=os.path.join(model_dir, "eval"),
                      step=restored.step, max_images=config.eval.max_images)
    print_report(report)
    return report


def print_report(report):
    for kind, table in (("bbox", "per_class"), ("segm", "per_class_segm")):
        if kind not in report:
            continue
        m = report[kind]
        first = "the first " if report["partial"] else ""
        print(f"\nCOCO {kind} on {first}{report['num_images']} val images (step {report['step']}): "
              + "  ".join(f"{k} {fmt(m[k])}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
              + ("  (- : no ground truth of that size)" if None in m.values() else ""))
        print(format_table(report[table]))
    if report["dropped_images"]:
        print(f"({len(report['dropped_images'])} val images could not be decoded and are not in "
              "these AP figures: " + ", ".join(f"{i} ({p}: {r})" for i, (p, r)
                                               in report["dropped_images"].items()) + ")")
    if report["skipped_images"]:
        print(f"({report['skipped_images']} val images were skipped at start-up (see the Data: "
              "line) and are not in these AP figures)")
