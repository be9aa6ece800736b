"""The paper's ablations at small scale: every variant of ``retinamask_tf.ablation.VARIANTS``
(RetinaNet, best matching at 0.5/0.4/0.3/0.2/0.0, fixed vs self-adjusting smooth L1 with
beta 0.11 / 1.0, RetinaMask) trained and evaluated with everything else fixed, for each
dataset config and seed.

  python bench/ablation.py                                   # demo + fruits_nuts, seeds 0,1,2
  python bench/ablation.py --configs configs/demo.yaml --variants retinanet,retinamask \\
      --seeds 0 --override train.steps=300 --override train.warmup_steps=30 \\
      --override "train.lr_drop_steps=[225, 270]"
  python bench/ablation.py --out bench/results/ablation_short \\
      --configs configs/demo.yaml+configs/ablation/short_demo.yaml,\\
configs/fruits_nuts.yaml+configs/ablation/short_fruits_nuts.yaml     # docs/results.md's table

Each run is ``main.py --mode=train_and_eval --noexport`` in ``<out>/<dataset>/<variant>/
seed<k>``; finished runs are skipped, so the same command resumes an interrupted
ablation. Writes ``<out>/ablation.json``, ``ablation.md`` (mean ± sample std over seeds,
one table per paper table) and ``ablation_ap.png`` (bbox AP, error bars min..max).
"""

import argparse
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from retinamask_tf import ablation  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="configs/demo.yaml,configs/fruits_nuts.yaml",
                   help="comma-separated dataset configs (one ablation each); 'a.yaml+b.yaml' "
                        "layers b over a (e.g. a shorter schedule), named after a")
    p.add_argument("--variants", default=",".join(ablation.VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--override", action="append", default=[],
                   help="key=value for every run (e.g. train.steps=300; the schedule must fit it)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "ablation"))
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in ablation.VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {list(ablation.VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    results, t0 = {}, time.time()
    for config in args.configs.split(","):
        layers = config.split("+")
        missing = [c for c in layers if not os.path.isfile(c)]
        if missing:
            raise SystemExit(f"--configs: no such file {missing}")
        dataset = os.path.splitext(os.path.basename(layers[0]))[0]
        # Seed-major: every variant gets seed 0 before any gets seed 1, so a stopped
        # ablation leaves comparable (paired) runs.
        for seed in seeds:
            for variant in variants:
                model_dir = ablation.run_dir(args.out, dataset, variant, seed)
                results.setdefault((dataset, variant), []).append(
                    ablation.run_one(layers, model_dir, variant, seed, args.override))
    rows = ablation.collect(results)
    meta = {"configs": args.configs.split(","), "seeds": seeds, "overrides": args.override,
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
            "wall_s_this_invocation": round(time.time() - t0, 1)}
    paths, text = ablation.write_report(rows, args.out, meta)
    print(text)
    for kind, path in paths.items():
        print(f"  {kind:9s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
