"""Side by side with torchvision's RetinaNet on this machine, in one process tree.

  pip install torch==2.14.1 torchvision==0.29.1      # benchmark-only, not a dependency
  python bench/compare_torchvision.py [--sizes 512x512,800x1333] [--train_sizes ...] [--threads 2]
  python bench/compare_torchvision.py --torch_python /path/to/venv/bin/python   # torch elsewhere

Every measurement runs in its own process (its peak RSS is its own), batch 1 for inference,
random weights, full post-processing on both sides, ``--threads`` intra-op threads:
  torchvision  ``retinanet_resnet50_fpn`` (91 COCO classes, its own resize/normalise
               transform set to keep the input size, eval mode, ``inference_mode``);
               train step: batch 2 at each ``--train_sizes`` with ``--gt_per_image``
               random boxes per image, SGD. bfloat16 rows: the same under torch's CPU
               autocast.
  ours         SavedModel ``serving_default`` (what TF Serving runs: uint8 image in,
               preprocessing, ResNet-50-FPN, decode, NMS, boxes out), exported from a
               random-weight ResNet-50-FPN at that size, with variables (the default
               export), frozen (``freeze=True``) and with bfloat16 compute
               (``precision="bfloat16"``); TFLite float32 and int8 of the same model
               through LiteRT, and the float32 network alone (``tflite_network``: no
               post-processing, to see what the post-processing costs in TFLite);
               train step: ``bench_model.py``'s ``train`` (with the mask branch; with
               random weights its positive RoIs are the GT boxes) and ``train_retinanet``
               modes at each ``--train_sizes``, batch 2, float32 and
               ``train.precision=mixed_bfloat16``.
  demo model   the training step of ``configs/demo.yaml``'s model (ResNet-18 at width 16,
               64-channel GroupNorm FPN and 2-conv heads, ``--small_classes`` classes) at
               ``--small_size``, batch ``--small_batch``, ``--small_threads`` thread(s),
               against torchvision's RetinaNet built the same way (no mask head).
Both sides compute on the same pixels: torchvision pads to multiples of 32, and ours is
configured with ``data.pad_stride: 32`` (``--pad_stride``; 800x1333 -> 800x1344).
The machine's speed drifts by tens of percent over minutes, so the measurements run in
interleaved rounds (``--rounds`` for inference, ``--train_rounds`` for training steps:
torchvision, then each of ours, then again); a ratio is taken within each round, against
torchvision float32 and against torchvision at the same precision, and the table gives
the median ratio (and its range) and the median time over all rounds. Writes
``<out>/compare_torchvision.json`` and ``.md``; the header names the CPU and whether it has
AVX-512 and native bfloat16 (the ratios depend on both).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import (cpu_name, gpu_peak_mb, random_run_dir, run_worker, timed,  # noqa: E402
                          write_results)


def _small_torch_model(num_classes, width=16, fpn_channels=64, head_convs=2):
    """torchvision's RetinaNet built as ``configs/demo.yaml``'s model: ResNet-18 at stem width
    ``width`` (trained BatchNorm), FPN of ``fpn_channels`` with GroupNorm and P6/P7 from P5,
    ``head_convs`` GroupNorm convs per tower, anchors of 3 strides."""
    import functools

    from torch import nn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    resnet = ResNet(BasicBlock, [2, 2, 2, 2])
    resnet.inplanes = width  # rebuilt at the width (torchvision's ResNet has no such argument)
    resnet.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    resnet.bn1 = nn.BatchNorm2d(width)
    for i, stride in enumerate((1, 2, 2, 2)):
        setattr(resnet, f"layer{i + 1}", resnet._make_layer(BasicBlock, width * 2 ** i, 2, stride))
    norm = functools.partial(nn.GroupNorm, 32)
    backbone = BackboneWithFPN(resnet, {"layer2": "0", "layer3": "1", "layer4": "2"},
                               [width * 2, width * 4, width * 8], fpn_channels,
                               extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
                               norm_layer=norm)
    sizes = tuple(tuple(3 * stride * 2 ** (i / 3) for i in range(3))
                  for stride in (8, 16, 32, 64, 128))
    head = RetinaNetHead(fpn_channels, 9, num_classes, norm_layer=norm)
    head.classification_head.conv = head.classification_head.conv[:head_convs]
    head.regression_head.conv = head.regression_head.conv[:head_convs]
    return backbone, head, AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)


def torch_worker(args):
    import contextlib

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = (int(v) for v in args.size.split("x"))
    if args.mode == "train_small":
        backbone, head, anchors = _small_torch_model(args.num_classes)
        model = torchvision.models.detection.RetinaNet(
            backbone, args.num_classes, min_size=min(h, w), max_size=max(h, w),
            anchor_generator=anchors, head=head)
    else:
        model = torchvision.models.detection.retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=91, min_size=min(h, w),
            max_size=max(h, w))
    # bfloat16: torch's CPU autocast (float32 weights, matmuls and convs in bfloat16).
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if (
        args.precision == "bfloat16") else contextlib.nullcontext
    if args.mode == "infer":
        model.eval()
        image = torch.rand(3, h, w)

        def call():
            with torch.inference_mode(), autocast():
                return model([image])

        row = timed(call, args.repeats)
        row["batch"] = 1
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(0)
        images = [torch.rand(3, h, w, generator=gen) for _ in range(args.train_batch)]
        targets = []
        g = args.gt_per_image
        for _ in images:
            yx = torch.rand(g, 2, generator=gen) * min(h, w) * 0.6
            hw = 16 + torch.rand(g, 2, generator=gen) * min(h, w) * 0.4
            boxes = torch.cat([yx, yx + hw], 1)[:, [1, 0, 3, 2]]  # xyxy
            low, high = (0, args.num_classes) if args.mode == "train_small" else (1, 91)
            targets.append({"boxes": boxes,
                            "labels": torch.randint(low, high, (g,), generator=gen)})

        def call():
            with autocast():
                losses = model(images, targets)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

        row = timed(call, args.repeats)
        row["batch"] = args.train_batch
    row.update(side="torchvision", mode=args.mode, size=args.size, precision=args.precision,
               params=sum(p.numel() for p in model.parameters()),
               version=f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(json.dumps(row))


def _random_model_dir(size, out_dir, coco128, pad_stride):
    """A training directory with a random-weight ResNet-50-FPN (80 classes) configured for
    ``size`` (short/long side = the size, so the serving resize is an identity; padded to
    the nearest multiples of ``pad_stride`` with ``data.padded_size``, as the README
    recommends for landscape data: 800x1344 for 800x1333 at 32; the default square would
    be 1344x1344); its data keys point at coco128 for the int8 calibration images."""
    from retinamask_tf import config as C

    h, w = (int(v) for v in size.split("x"))
    json_path, images = coco128
    cfg = C.load_config([], [
        "model.backbone.depth=50", "model.backbone.norm=frozen", "model.num_classes=80",
        "model.mask_head.enabled=false", f"data.short_side={min(h, w)}",
        f"data.long_side={max(h, w)}", f"data.pad_stride={pad_stride}",
        f"data.padded_size=[{-(-h // pad_stride) * pad_stride}, {-(-w // pad_stride) * pad_stride}]",
        "data.kind=coco", f"data.train_json={json_path}",
        f"data.train_images={images}", f"data.val_json={json_path}", f"data.val_images={images}"])
    random_run_dir(cfg, out_dir)
    return cfg


def ours_prepare(args):
    """Exports the SavedModel and the TFLite variants of a random ResNet-50-FPN."""
    from retinamask_tf.export import saved_model, tflite

    model_dir = os.path.join(args.work, args.size)
    if os.path.exists(os.path.join(model_dir, "prepared")):  # --work of an earlier run
        print(json.dumps({"model_dir": model_dir}))
        return
    _random_model_dir(args.size, model_dir, (args.coco_json, args.coco_images), args.pad_stride)
    saved_model.export_saved_model(model_dir, os.path.join(model_dir, "saved_model"))
    saved_model.export_saved_model(model_dir, os.path.join(model_dir, "saved_model_frozen"),
                                   freeze=True)
    saved_model.export_saved_model(model_dir, os.path.join(model_dir, "saved_model_bfloat16"),
                                   precision="bfloat16")
    if args.tflite_variants:
        tflite.export_tflite(model_dir, os.path.join(model_dir, "tflite"),
                             args.tflite_variants.split(","),
                             num_calibration_images=args.calibration_images, progress=None)
    if "float32" in args.tflite_variants.split(","):
        _network_tflite(model_dir, os.path.join(model_dir, "tflite", "network_float32.tflite"))
    open(os.path.join(model_dir, "prepared"), "w").close()
    print(json.dumps({"model_dir": model_dir}))


def _network_tflite(model_dir, path):
    """The float32 TFLite of the network alone (uint8 image in, class logits and box deltas
    out), converted as the export converts (weights frozen first, builtin ops only)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from retinamask_tf.export.saved_model import restore_for_export

    model = restore_for_export(model_dir).model
    spec = tf.TensorSpec((1,) + tuple(model.image_size) + (3,), tf.uint8)
    network = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False),
                          input_signature=[spec])
    frozen = convert_variables_to_constants_v2(network.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(lambda images: frozen(images), input_signature=[spec]).get_concrete_function()],
        tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as f:
        f.write(converter.convert())


def ours_worker(args):
    import numpy as np

    h, w = (int(v) for v in args.size.split("x"))
    model_dir = os.path.join(args.work, args.size)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if args.mode.startswith("savedmodel"):
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        name = {"savedmodel": "saved_model", "savedmodel_frozen": "saved_model_frozen",
                "savedmodel_bfloat16": "saved_model_bfloat16"}[args.mode]
        serving = tf.saved_model.load(os.path.join(model_dir, name)).signatures[
            "serving_default"]
        batch = tf.constant(image[None])
        row = timed(lambda: serving(images=batch)["num_detections"].numpy(), args.repeats)
        row.update(version=f"tensorflow {tf.__version__}", gpu_peak_mb=gpu_peak_mb())
    elif args.mode == "tflite_network":
        from ai_edge_litert.interpreter import Interpreter
        path = os.path.join(model_dir, "tflite", "network_float32.tflite")
        interpreter = Interpreter(model_path=path, num_threads=args.threads)
        interpreter.allocate_tensors()
        shape = interpreter.get_input_details()[0]["shape"]  # the padded size
        padded = np.zeros(shape, np.uint8)
        padded[0, :h, :w] = image
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], padded)
        row = timed(interpreter.invoke, args.repeats)
        row.update(file_mb=os.path.getsize(path) / 2 ** 20, version="ai-edge-litert")
    else:  # tflite_<variant>
        from retinamask_tf.export.litert_runner import LiteRTPredictor
        path = os.path.join(model_dir, "tflite", f"model_{args.mode[len('tflite_'):]}.tflite")
        detector = LiteRTPredictor(path, num_threads=args.threads)
        padded, shape, _ = detector.preprocess(image)  # letterbox (an identity here) untimed
        row = timed(lambda: detector.run_letterboxed(padded, shape), args.repeats)
        row.update(file_mb=os.path.getsize(path) / 2 ** 20, version="ai-edge-litert")
    row.update(side="ours", mode=args.mode, size=args.size, batch=1)
    print(json.dumps(row))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512x512,800x1333")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    p.add_argument("--rounds", type=int, default=3, help="interleaved inference rounds")
    p.add_argument("--pad_stride", type=int, default=32, help="ours: data.pad_stride")
    p.add_argument("--train_repeats", type=int, default=3)
    p.add_argument("--train_rounds", type=int, default=2, help="interleaved training rounds")
    p.add_argument("--train_batch", type=int, default=2)
    p.add_argument("--train_sizes", default="512x512,800x1333")
    p.add_argument("--gt_per_image", type=int, default=10,
                   help="training boxes per image (ours: the mask branch's positive RoIs)")
    p.add_argument("--precisions", default="float32,bfloat16",
                   help="float32 and/or bfloat16 (ours: the bfloat16 SavedModel export and "
                        "train.precision=mixed_bfloat16; torchvision: CPU autocast)")
    p.add_argument("--small_size", default="384x512",
                   help="the demo-sized training step (empty: skip): configs/demo.yaml's "
                        "model against torchvision's RetinaNet built the same way")
    p.add_argument("--small_batch", type=int, default=4)
    p.add_argument("--small_threads", type=int, default=1)
    p.add_argument("--small_classes", type=int, default=5, help="the demo's 5 shapes")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tflite_variants", default="float32,int8")
    p.add_argument("--calibration_images", type=int, default=8,
                   help="int8 calibration images (latency does not depend on them)")
    p.add_argument("--torch_python", default=sys.executable,
                   help="a python with torch + torchvision (default: this one)")
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding coco128/ (default: $RETINAMASK_TEST_DATA)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--work", default=None,
                   help="folder for the exported models (default: a new temporary one); "
                        "models an earlier run prepared there are reused")
    p.add_argument("--worker", choices=["torch", "prepare", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--num_classes", type=int, default=91, help=argparse.SUPPRESS)
    p.add_argument("--coco_json", help=argparse.SUPPRESS)
    p.add_argument("--coco_images", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "torch":
        return torch_worker(args)
    if args.worker == "prepare":
        return ours_prepare(args)
    if args.worker == "ours":
        return ours_worker(args)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    work = args.work or tempfile.mkdtemp(prefix="compare_torchvision_")
    if not args.datasets:
        p.error("--datasets (or $RETINAMASK_TEST_DATA): the folder holding coco128/")
    coco = [os.path.join(args.datasets, "coco128", "annotations.json"),
            os.path.join(args.datasets, "coco128", "images")]
    common = ["--threads", str(args.threads), "--work", work]
    precisions = [x for x in args.precisions.split(",") if x]
    bf16 = "bfloat16" in precisions
    for size in filter(None, args.sizes.split(",")):
        run_worker([sys.executable, __file__, "--worker", "prepare", "--size", size,
                    "--tflite_variants", args.tflite_variants, "--calibration_images",
                    str(args.calibration_images), "--coco_json", coco[0], "--coco_images",
                    coco[1], "--pad_stride", str(args.pad_stride)] + common, env,
                   f"export ours {size}")

    def torch_job(mode, size, precision, extra=(), threads=args.threads):
        return dict(side="torchvision", mode=mode, size=size, precision=precision,
                    cmd=[args.torch_python, __file__, "--worker", "torch", "--mode", mode,
                         "--size", size, "--precision", precision, "--threads", str(threads),
                         "--work", work] + list(extra))

    def ours_job(mode, size, precision, cmd):
        return dict(side="ours", mode=mode, size=size, precision=precision, cmd=cmd)

    # Groups of measurements taken together in each round; the first is the reference.
    infer_groups, train_groups = [], []
    infer_modes = ["savedmodel", "savedmodel_frozen"] + [
        f"tflite_{v}" for v in args.tflite_variants.split(",") if v]
    if "float32" in args.tflite_variants.split(","):
        infer_modes.append("tflite_network")
    for size in filter(None, args.sizes.split(",")):
        reps = ["--repeats", str(args.repeats)]
        group = [torch_job("infer", size, "float32", reps)]
        group += [torch_job("infer", size, "bfloat16", reps)] if bf16 else []
        for mode in infer_modes + (["savedmodel_bfloat16"] if bf16 else []):
            group.append(ours_job(mode, size, "bfloat16" if mode.endswith("bfloat16") else "float32",
                                  [sys.executable, __file__, "--worker", "ours", "--mode", mode,
                                   "--size", size] + reps + common))
        infer_groups.append(group)

    def bench_model_job(mode, size, precision, batch, threads, overrides, repeats, config=()):
        extra = sum((["--override", o] for o in overrides), [])
        extra += sum((["--config", c] for c in config), [])
        if precision == "bfloat16":
            extra += ["--override", "train.precision=mixed_bfloat16"]
        return ours_job(mode, size, precision, [
            sys.executable, os.path.join(REPO, "bench", "bench_model.py"), "--worker",
            "--mode", mode, "--threads", str(threads), "--size", size, "--repeats",
            str(repeats), "--train_batch", str(batch), "--gt_per_image",
            str(args.gt_per_image)] + extra)

    for size in filter(None, args.train_sizes.split(",")):
        train = ["--repeats", str(args.train_repeats), "--train_batch", str(args.train_batch),
                 "--gt_per_image", str(args.gt_per_image)]
        group = [torch_job("train", size, "float32", train)]
        group += [torch_job("train", size, "bfloat16", train)] if bf16 else []
        for precision in precisions:
            for mode in ("train_retinanet", "train"):
                group.append(bench_model_job(mode, size, precision, args.train_batch,
                                             args.threads, [f"data.pad_stride={args.pad_stride}"],
                                             args.train_repeats))
        train_groups.append(group)
    if args.small_size:
        small = ["--repeats", str(args.train_repeats * 3), "--train_batch", str(args.small_batch),
                 "--gt_per_image", str(args.gt_per_image), "--num_classes",
                 str(args.small_classes)]
        group = [torch_job("train_small", args.small_size, "float32", small, args.small_threads)]
        for mode in ("train_retinanet", "train"):
            job = bench_model_job(mode, args.small_size, "float32", args.small_batch,
                                  args.small_threads, [f"model.num_classes={args.small_classes}"],
                                  args.train_repeats * 3,
                                  [os.path.join(REPO, "configs", "demo.yaml")])
            job["mode"] = f"{mode} (demo model)"
            group.append(job)
        train_groups.append(group)

    measured = []
    for groups, rounds in ((infer_groups, args.rounds), (train_groups, args.train_rounds)):
        for r in range(rounds):
            for group in groups:
                rows = [dict(run_worker(job["cmd"], env, f"round {r + 1}: {job['side']} "
                                        f"{job['mode']} {job['precision']} {job['size']}"),
                             **{k: v for k, v in job.items() if k != "cmd"}, round=r + 1)
                        for job in group]
                for row in rows:  # within the round: against torchvision float32, and
                    row["ratio_to_torchvision"] = row["median_s"] / rows[0]["median_s"]
                    same = next(x for x in rows if x["side"] == "torchvision"  # same precision
                                and x["precision"] == row["precision"])
                    row["ratio_same_precision"] = row["median_s"] / same["median_s"]
                measured.extend(rows)
    rows = []
    for group in infer_groups + train_groups:
        for job in group:
            runs = [x for x in measured if all(x[k] == job[k] for k in
                                               ("side", "mode", "size", "precision"))]
            ratios = sorted(x["ratio_to_torchvision"] for x in runs)
            same = sorted(x["ratio_same_precision"] for x in runs)
            row = dict(runs[-1], median_s=statistics.median(t for x in runs for t in x["times_s"]),
                       min_s=min(x["min_s"] for x in runs),
                       peak_rss_mb=max(x["peak_rss_mb"] for x in runs), rounds=len(runs),
                       times_s=[t for x in runs for t in x["times_s"]],
                       ratio_to_torchvision=statistics.median(ratios),
                       ratio_range=[ratios[0], ratios[-1]],
                       ratio_same_precision=statistics.median(same))
            row.pop("round")
            rows.append(row)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
               "python": platform.python_version(), "cpu": cpu_name()}
    result = {"machine": machine, "pad_stride": args.pad_stride, "rows": rows,
              "rounds": measured}
    lines = [f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}; "
             f"{args.threads} threads (demo-model step: {args.small_threads}); inference "
             f"{args.rounds} interleaved rounds x {args.repeats} calls, training "
             f"{args.train_rounds} rounds x {args.train_repeats} steps (demo model: "
             f"{args.train_repeats * 3}). Ratios: median over rounds (range), each taken "
             "within its round.", "",
             "| side | mode | precision | input | batch | median s | / torchvision float32 "
             "(range) | / torchvision same precision | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first = r["side"] == "torchvision" and r["precision"] == "float32"
        ratio = "1" if first else (f"{r['ratio_to_torchvision']:.2f} "
                                   f"({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})")
        same = f"{r['ratio_same_precision']:.2f}" if r["precision"] != "float32" and (
            r["side"] == "ours") else ""
        lines.append(f"| {r['side']} | {r['mode']} | {r['precision']} | {r['size']} | "
                     f"{r['batch']} | {r['median_s']:.3f} | {ratio} | {same} | "
                     f"{r['peak_rss_mb']:.0f} |")
    write_results(args.out, "compare_torchvision", result, lines)


if __name__ == "__main__":
    main()
