"""Data at COCO scale: start-up time and memory of training and evaluation on COCO-sized
instances JSONs, beside pycocotools' own ``COCO(json)`` on the same files.

  python bench/data_scale.py --datasets $RETINAMASK_TEST_DATA [--sizes 10000,50000,118287]
      [--work /tmp/data_scale] [--eval_images 5000]

Writes COCO-sized JSONs (``bench/coco_synth.py``: train2017's shape, every image a link to
one of coco128's real images) and measures, each in its own process:

  coco_api    ``pycocotools.coco.COCO(json)``: seconds and peak RSS (the floor any COCO user
              pays);
  first_step  our training start-up to the end of the first step (``Trainer`` on the
              demo model, 256 px, batch 2, ``data.max_instances=100``,
              ``data.verify_images=header``): seconds from process start and peak RSS,
              mask head on and off, with the image checks to do (cold) and remembered
              (warm, as a resume or a second run); the same on coco128 is the baseline
              subtracted ("added" columns: what the dataset adds); also the loading's
              own peak and what it holds afterwards (RSS over the RSS before it);
  growth      the same start-up on two files that differ only in the longest image's
              polygon text (1 MB and 2 MB);
  mirrored    the largest size under ``--strategy=mirrored``;
  check_rate  image files checked per second, header and full, nothing remembered;
  eval        ``evaluate`` at val2017 scale (``--eval_images`` images, 100 detections each
              with masks for 50: a random model with score threshold 0) and COCOeval alone
              on the files it wrote (the floor for scoring them).

Writes ``<out>/data_scale.json`` and ``data_scale.md``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

START = time.time()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, write_results  # noqa: E402


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb():
    """This process's resident memory now (MB)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _real_images(datasets):
    coco128 = os.path.join(datasets, "coco128")
    raw = json.load(open(os.path.join(coco128, "annotations.json")))
    return [(os.path.join(coco128, "images", i["file_name"]), i["height"], i["width"])
            for i in raw["images"]]


def _generate(work, name, real, num_images, **kwargs):
    """The JSON (written once into ``work``) and its summary."""
    from bench.coco_synth import write_coco_like
    path = os.path.join(work, f"{name}.json")
    meta_path = path + ".meta"
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        print(f"[data_scale] writing {path} ({num_images} images) ...", flush=True)
        meta = write_coco_like(path, os.path.join(work, "images"), real, num_images, **kwargs)
        json.dump(meta, open(meta_path, "w"))
    return path, json.load(open(meta_path))


def _worker(args):
    if args.worker == "coco_api":
        import contextlib
        import io
        from pycocotools.coco import COCO
        t = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(args.json)
        return {"seconds": time.time() - t, "peak_rss_mb": _peak_mb()}
    if args.worker == "cocoeval":
        return _cocoeval_only(args)
    if args.worker == "check_rate":
        return _check_rate(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging
    logging.disable(logging.WARNING)  # the synthetic files' few hundred skipped masks
    from retinamask_tf import config as C
    from retinamask_tf.data import coco, pipeline
    if args.worker == "eval":
        return _eval(args, C, coco, pipeline)
    from retinamask_tf.training import distribute
    from retinamask_tf.training.trainer import Trainer
    coco128 = os.path.join(args.datasets, "coco128")
    config = C.load_config([os.path.join(REPO, "configs", "demo.yaml")], [
        "data.kind=coco", f"data.train_json={args.json}", f"data.train_images={args.images}",
        f"data.val_json={coco128}/annotations.json", f"data.val_images={coco128}/images",
        "data.verify_images=header", f"data.image_check_cache={args.cache}",
        "data.max_instances=100", f"model.mask_head.enabled={str(args.masks).lower()}",
        "train.batch_size=2", "train.steps=1", "train.warmup_steps=0", "train.lr_drop_steps=[]",
        "train.checkpoint_every=1000",
        "train.checkpoint_data_iterator=false"])
    t, rss_before = time.time(), _rss_mb()
    train, val = pipeline.load_splits(config.data, masks=args.masks)
    loaded = time.time() - t
    load_peak, rss_loaded = _peak_mb() - rss_before, _rss_mb() - rss_before
    trainer = Trainer(config, args.model_dir, distribute.build_strategy(args.strategy),
                      datasets=(train, val))
    trainer.train(steps=1, progress=False)
    return {"seconds": time.time() - START, "load_s": loaded, "peak_rss_mb": _peak_mb(),
            "load_peak_mb": load_peak, "held_after_load_mb": rss_loaded,
            "images": train.num_examples,
            "annotations": sum(len(r.boxes) for r in train.records)}


def _eval(args, C, coco, pipeline):
    from retinamask_tf.evaluation.coco_evaluator import evaluate
    from retinamask_tf.modeling import factory
    config = C.load_config([os.path.join(REPO, "configs", "demo.yaml")], [
        "data.kind=coco", f"data.val_json={args.json}", f"data.val_images={args.images}",
        "data.verify_images=header", f"data.image_check_cache={args.cache}",
        "postprocess.score_threshold=0.0", "eval.batch_size=16"])
    val = pipeline.verify_images(coco.load_coco(args.json, args.images, masks=False), "header",
                                 args.cache)
    model = factory.build_model(config, val.num_classes)
    t = time.time()
    report = evaluate(model, val, config, out_dir=args.model_dir, progress=False)
    return {"seconds": time.time() - t, "peak_rss_mb": _peak_mb(),
            "images": report["num_images"], "detections": report["num_detections"],
            "bbox_AP": report["bbox"]["AP"], "segm_AP": report["segm"]["AP"]}


def _check_rate(args):
    """Image files checked per second (fresh cache), ``full`` and ``header``."""
    import logging
    import tempfile
    logging.disable(logging.WARNING)
    from retinamask_tf.data import coco, image_check
    records = coco.load_coco(args.json, args.images, masks=False).records
    out = {}
    for mode in ("header", "full"):
        with tempfile.TemporaryDirectory() as cache:
            t = time.time()
            image_check.check_images(records, mode, cache)
            out[mode] = len(records) / (time.time() - t)
    return {"files": len(records), "header_per_s": out["header"], "full_per_s": out["full"]}


def _cocoeval_only(args):
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    t = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.json)
        for iou_type, name in (("bbox", "detections.json"), ("segm", "segmentations.json")):
            ev = COCOeval(gt, gt.loadRes(os.path.join(args.model_dir, name)), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    return {"seconds": time.time() - t, "peak_rss_mb": _peak_mb()}


def _run(worker, what, **kwargs):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker]
    for k, v in kwargs.items():
        cmd += [f"--{k}", str(v)]
    print(f"[data_scale] {what} ...", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{what} failed")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"[data_scale]   {row}", flush=True)
    return row


def _start_up(work, label, json_path, images, masks, datasets, strategy="default", warm=True):
    """(cold, warm) first_step rows of one file: the first with a fresh image-check cache,
    the second with the cache the first left (``warm`` False: the cold row only)."""
    cache = os.path.join(work, "cache", label)
    subprocess.run(["rm", "-rf", cache])
    rows = []
    for state in ("cold", "warm") if warm else ("cold",):
        model_dir = os.path.join(work, "runs", f"{label}_{state}")
        subprocess.run(["rm", "-rf", model_dir])
        rows.append(dict(_run("first_step", f"{label} start-up ({state} image checks)",
                              json=json_path, images=images, masks=masks, cache=cache,
                              model_dir=model_dir, datasets=datasets, strategy=strategy),
                         label=label, checks=state, masks=masks, strategy=strategy))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["coco_api", "first_step", "eval", "cocoeval",
                                        "check_rate"])
    p.add_argument("--json")
    p.add_argument("--images")
    p.add_argument("--masks", type=lambda v: v == "True", default=True)
    p.add_argument("--cache")
    p.add_argument("--model_dir")
    p.add_argument("--strategy", default="default")
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA", "data"))
    p.add_argument("--sizes", default="10000,50000,118287")
    p.add_argument("--eval_images", type=int, default=5000)
    p.add_argument("--growth_images", type=int, default=50000)
    p.add_argument("--work", default="/tmp/data_scale")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return

    os.makedirs(args.work, exist_ok=True)
    real = _real_images(args.datasets)
    coco128 = os.path.join(args.datasets, "coco128")
    images = os.path.join(args.work, "images")
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "files": {}, "coco_api": {},
              "start_up": [], "growth": [], "eval": {}}
    base = {}
    for masks in (True, False):
        for row in _start_up(args.work, f"coco128_masks{int(masks)}",
                             f"{coco128}/annotations.json", f"{coco128}/images", masks,
                             args.datasets):
            base[(masks, row["checks"])] = row
            result["start_up"].append(dict(row, images=128))
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        path, meta = _generate(args.work, f"train_{n}", real, n)
        result["files"][str(n)] = meta
        result["coco_api"][str(n)] = _run("coco_api", f"COCO({n} images)", json=path)
        for masks in (True, False):
            for row in _start_up(args.work, f"{n}_masks{int(masks)}", path, images, masks,
                                 args.datasets):
                b = base[(masks, row["checks"])]
                row.update(added_rss_mb=row["peak_rss_mb"] - b["peak_rss_mb"],
                           added_seconds=row["seconds"] - b["seconds"])
                result["start_up"].append(row)
    largest = max(sizes)
    path = os.path.join(args.work, f"train_{largest}.json")
    for row in _start_up(args.work, f"{largest}_mirrored", path, images, True, args.datasets,
                         strategy="mirrored", warm=False):
        b = base[(True, "cold")]
        row.update(added_rss_mb=row["peak_rss_mb"] - b["peak_rss_mb"],
                   added_seconds=row["seconds"] - b["seconds"])
        result["start_up"].append(row)
    for kb in (1024, 2048):
        path, meta = _generate(args.work, f"growth_{args.growth_images}_{kb}kb", real,
                               args.growth_images, longest_image_kb=kb)
        result["files"][f"{args.growth_images}_{kb}kb"] = meta
        row = _start_up(args.work, f"growth_{kb}kb", path, images, True, args.datasets)[-1]
        result["growth"].append(dict(row, longest_image_kb=kb))
    if args.eval_images:
        path, meta = _generate(args.work, f"val_{args.eval_images}", real, args.eval_images,
                               seed=1)
        result["files"][f"val_{args.eval_images}"] = meta
        result["check_rate"] = _run("check_rate", "image checks per second", json=path,
                                    images=images)
        out = os.path.join(args.work, "runs", "eval")
        subprocess.run(["rm", "-rf", out])
        cache = os.path.join(args.work, "cache", "eval")
        result["eval"]["evaluate"] = _run("eval", f"evaluate ({args.eval_images} images)",
                                          json=path, images=images, cache=cache,
                                          model_dir=out, datasets=args.datasets)
        result["eval"]["cocoeval_only"] = _run("cocoeval", "COCOeval alone on those files",
                                               json=path, model_dir=out)
        result["eval"]["files_mb"] = {n: os.path.getsize(os.path.join(out, n)) / 2 ** 20
                                      for n in ("detections.json", "segmentations.json")}
    write_results(args.out, "data_scale", result, _table(result))


def _table(r):
    lines = [f"Data at COCO scale on {r['cores']} cores of {r['cpu']}", "",
             "| file | images | annotations | JSON MB | COCO(json) s | COCO(json) peak MB |",
             "|---|---|---|---|---|---|"]
    for n, meta in r["files"].items():
        api = r["coco_api"].get(n)
        lines.append(f"| {n} | {meta['images']} | {meta['annotations']} | "
                     f"{meta['bytes'] / 1e6:.0f} | "
                     + (f"{api['seconds']:.1f} | {api['peak_rss_mb']:.0f} |" if api else "- | - |"))
    lines += ["", "Training start-up to the end of the first step (seconds from process start; "
              "peak RSS MB; added = minus the same on coco128):", "",
              "| images | masks | strategy | image checks | load s | first step s | added s | "
              "peak MB | added MB | added / COCO(json) peak | loading's own peak MB | "
              "held after loading MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["start_up"]:
        api = r["coco_api"].get(str(row["images"]))
        ratio = (f"{row['added_rss_mb'] / api['peak_rss_mb']:.2f}"
                 if api and "added_rss_mb" in row else "-")
        lines.append(f"| {row['images']} | {'on' if row['masks'] else 'off'} | {row['strategy']} | "
                     f"{row['checks']} | {row['load_s']:.1f} | {row['seconds']:.1f} | "
                     f"{row.get('added_seconds', 0):.1f} | {row['peak_rss_mb']:.0f} | "
                     f"{row.get('added_rss_mb', 0):.0f} | {ratio} | {row['load_peak_mb']:.0f} | "
                     f"{row['held_after_load_mb']:.0f} |")
    if r["growth"]:
        lines += ["", "Growth: only the longest image's polygon text differs:", "",
                  "| longest image | peak MB | first step s |", "|---|---|---|"]
        for row in r["growth"]:
            lines.append(f"| {row['longest_image_kb']} KB | {row['peak_rss_mb']:.0f} | "
                         f"{row['seconds']:.1f} |")
    if r.get("check_rate"):
        c = r["check_rate"]
        lines += ["", f"Image checks of {c['files']} files, nothing remembered: header "
                  f"{c['header_per_s']:.0f} files/s, full {c['full_per_s']:.0f} files/s."]
    if r["eval"]:
        e, c = r["eval"]["evaluate"], r["eval"]["cocoeval_only"]
        lines += ["", f"Evaluation of {e['images']} images ({e['detections']} detections, masks "
                  "for 50 per image):", "", "| what | seconds | peak MB |", "|---|---|---|",
                  f"| evaluate (detect, paste masks, write, COCOeval bbox + segm) | "
                  f"{e['seconds']:.0f} | {e['peak_rss_mb']:.0f} |",
                  f"| COCOeval alone on the written files | {c['seconds']:.0f} | "
                  f"{c['peak_rss_mb']:.0f} |"]
    return lines


if __name__ == "__main__":
    main()
