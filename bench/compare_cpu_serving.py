"""CPU serving latency of RetinaNet ResNet-50-FPN with the same weights on every engine:
torchvision eager, ONNX Runtime and OpenVINO on torchvision's ONNX export, and ours
(SavedModel, OpenVINO IR), in one process tree.

  pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime    # benchmark-only venv
  pip install -e '.[openvino]'                                      # this python: TF + openvino
  python bench/compare_cpu_serving.py [--sizes 512x512,800x1333] [--threads 1,2] [--rounds 3]
  python bench/compare_cpu_serving.py --torch_python /path/to/venv/bin/python --work DIR
  python bench/compare_cpu_serving.py --init seed           # the constructor's weights (see below)

The weights: torchvision's ``retinanet_resnet50_fpn(weights=None, weights_backbone=None,
num_classes=91, min_size=S, max_size=L)`` built after ``torch.manual_seed(0)``, either as
constructed (``--init seed``: its constructor's initialisation keeps every class score near
the 0.01 prior, under the 0.05 threshold, so there are no detections and the
post-processing only discards; and OpenVINO on the ONNX file then returns one detection of
uninitialised values where torchvision and ONNX Runtime return none), or with every
parameter drawn as ``bench/reference_parity.py`` draws them and the 11 class channels that
are no COCO category silenced as in the trained checkpoint (``--init drawn``: 300
detections, the cap, on coco128's first image; the default), or a torchvision state dict
(``--init FILE.pth``, e.g. the published COCO checkpoint). Its state dict goes to
``weights.pth``, which our ``--mode=import_weights --source=torchvision_retinanet``
importer reads (80 COCO classes, torchvision's conventions), with
``data.short_side``/``long_side`` set to the benchmark size and ``data.padded_size`` to it
rounded up to 32, as torchvision pads (800x1333 -> 800x1344; the resize is an identity on
both sides). Prepared once per size (reused from ``--work``): torchvision's ONNX export
(TorchScript exporter, opset 17, fixed size, input the list of one 3xHxW float image as
torchvision's ONNX tests give it), our SavedModel in float32 (the default export) and
bfloat16 (``precision="bfloat16"``, with variables and frozen), our OpenVINO IR
(``export_openvino``), and a check, recorded in the results, that torchvision and our
float32 SavedModel find the same detections on the image (and ONNX Runtime torchvision's).

Each row runs in its own process (its peak RSS is its own), batch 1, one coco128 image
(``--image``, default the first) resized to the size: uint8 [1, H, W, 3] for ours, the same
pixels as a float [0, 1] 3xHxW tensor for the others; every call is the whole model, input
normalisation and resize/pad to NMS and the boxes out:
  torchvision       ``model([image])`` in eval mode under ``inference_mode``; bfloat16: the
                    same under torch's CPU autocast (``--torch_python``)
  onnxruntime       the ONNX file, ``intra_op_num_threads`` = threads, inter-op 1
  openvino_onnx     the ONNX file compiled for the CPU as ``OpenVINOPredictor`` compiles our
                    IR (``INFERENCE_NUM_THREADS``, ``INFERENCE_PRECISION_HINT`` f32 / bf16;
                    the default LATENCY hint, one stream, recorded per row)
  savedmodel        our SavedModel's ``serving_default`` (what TF Serving runs), float32 and
                    bfloat16 exports, TF intra- and inter-op threads = threads
  savedmodel_frozen the bfloat16 export with its weights frozen (``freeze=True``)
  openvino_ir       our IR through ``OpenVINOPredictor`` at float32 / bfloat16, timing its
                    compiled model's call on the uint8 image (in-graph resize, network, NMS)
Each size and ``--threads`` count is a group; the groups run in ``--rounds`` interleaved
rounds (this machine's speed drifts over minutes). Ratios are taken within each round,
against torchvision eager float32 and against OpenVINO on torchvision's ONNX at the same
precision, at the same threads; the table gives the median ratio over rounds (and its
range) and the median time over all calls. Writes ``<out>/compare_cpu_serving.json`` and
``.md``; the header names the CPU (AVX-512 and native bfloat16 flags) and the versions.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, run_worker, timed, write_results  # noqa: E402

TAG = "cpu_serving"
PAD_STRIDE = 32  # torchvision's GeneralizedRCNNTransform pads to multiples of 32
ONNX_OPSET = 17
# engine -> (interpreter: "torch" = --torch_python, "ours" = this python; table label)
ENGINES = {
    "torchvision": ("torch", "torchvision eager"),
    "onnxruntime": ("torch", "ONNX Runtime, torchvision's ONNX"),
    "openvino_onnx": ("ours", "OpenVINO, torchvision's ONNX"),
    "savedmodel": ("ours", "ours: SavedModel"),
    "savedmodel_frozen": ("ours", "ours: SavedModel, frozen"),
    "openvino_ir": ("ours", "ours: OpenVINO IR"),
}
ROWS = (("torchvision", "float32"), ("torchvision", "bfloat16"), ("onnxruntime", "float32"),
        ("openvino_onnx", "float32"), ("openvino_onnx", "bfloat16"),
        ("savedmodel", "float32"), ("savedmodel", "bfloat16"), ("savedmodel_frozen", "bfloat16"),
        ("openvino_ir", "float32"), ("openvino_ir", "bfloat16"))
BASELINE = ("torchvision", "float32")
OV_PROPERTIES = ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT",
                 "INFERENCE_PRECISION_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING")
# the detection check: same class, score within SCORE_TOL, every coordinate within BOX_TOL_PX
SCORE_TOL = 1e-4
BOX_TOL_PX = 1.0
YXYX = [1, 0, 3, 2]  # torchvision's (x1, y1, x2, y2) -> ours (y1, x1, y2, x2)


def _hw(size):
    return tuple(int(v) for v in size.split("x"))


def _files(work, size):
    """The prepared files of one size (``--work``/<size>/...)."""
    folder = os.path.join(work, size)
    return dict({name: os.path.join(folder, rel) for name, rel in (
        ("image", "image.npy"), ("weights", "weights.pth"),
        ("onnx", "torchvision.onnx"), ("torch_det", "torch_detections.npz"),
        ("model_dir", "imported"), ("savedmodel_float32", "saved_model"),
        ("savedmodel_bfloat16", "saved_model_bfloat16"),
        ("savedmodel_frozen_bfloat16", "saved_model_bfloat16_frozen"), ("ir", "openvino/model.xml"),
        ("marker", "prepared.json"))}, folder=folder)


def _chw(image):
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1] (float32 division, as torch's)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


# ---------------------------------------------------------------------------- torch venv

def _torchvision_model(size, state=None):
    """torchvision's RetinaNet R-50-FPN keeping ``size`` (eval mode), seed-0 initialised or
    holding ``state``."""
    import torch
    import torchvision

    h, w = _hw(size)
    torch.manual_seed(0)
    model = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=min(h, w),
        max_size=max(h, w))
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def _initialise(model, init):
    """``--init``: seed (as built), drawn (bench/reference_parity.py's draw, the 11 channels
    that are no COCO category never scoring) or a state dict file."""
    import torch

    from bench.reference_parity import coco_ids, randomise
    if init == "seed":
        return
    if init != "drawn":
        model.load_state_dict(torch.load(init, weights_only=True))
        return
    randomise(model, 0)
    head = model.head.classification_head
    dead = [c for c in range(head.num_classes) if c not in set(coco_ids())]
    with torch.no_grad():
        head.cls_logits.bias.view(head.num_anchors, head.num_classes)[:, dead] = -100.0


def torch_prepare(args):
    """weights.pth, the ONNX export, and torchvision's and ONNX Runtime's float32
    detections on the image."""
    import onnx
    import onnxruntime
    import torch
    import torchvision

    files = _files(args.work, args.size)
    torch.set_num_threads(args.threads)
    model = _torchvision_model(args.size)
    _initialise(model, args.init)
    torch.save(model.state_dict(), files["weights"])
    x = torch.from_numpy(_chw(np.load(files["image"])))
    torch.onnx.export(model, ([x],), files["onnx"], dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["images"], output_names=["boxes", "scores", "labels"],
                      do_constant_folding=True)
    with torch.inference_mode():
        det = model([x])[0]
    ort = _ort_session(files["onnx"], args.threads)
    ort_det = ort.run(None, {ort.get_inputs()[0].name: x.numpy()})
    np.savez(files["torch_det"], boxes=det["boxes"].numpy(), scores=det["scores"].numpy(),
             labels=det["labels"].numpy(), ort_boxes=ort_det[0], ort_scores=ort_det[1],
             ort_labels=ort_det[2])
    print(json.dumps({"versions": {"torch": torch.__version__,
                                   "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                                   "onnxruntime": onnxruntime.__version__},
                      "onnx_export": {"exporter": "torch.onnx.export(dynamo=False)",
                                      "opset": ONNX_OPSET,
                                      "mb": os.path.getsize(files["onnx"]) / 2 ** 20}}))


def _ort_session(path, threads):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _torchvision_engine(args, files, image):
    import contextlib

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    model = _torchvision_model(args.size, torch.load(files["weights"], weights_only=True))
    x = torch.from_numpy(_chw(image))
    # bfloat16: torch's CPU autocast (float32 weights, matmuls and convs in bfloat16), as
    # bench/compare_torchvision.py's torch_worker
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if (
        args.precision == "bfloat16") else contextlib.nullcontext

    def run():
        with torch.inference_mode(), autocast():
            return model([x])[0]

    def detections(out):
        return tuple(out[k].float().numpy() for k in ("boxes", "scores", "labels"))

    return run, _torchvision_order(detections), {
        "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}"}


def _torchvision_order(detections):
    """``detections`` giving torchvision's (boxes xyxy, scores, labels) -> ours (yxyx)."""
    def ours(out):
        boxes, scores, labels = detections(out)
        return boxes[:, YXYX], scores, labels
    return ours


def _onnxruntime_engine(args, files, image):
    import onnxruntime
    session = _ort_session(files["onnx"], args.threads)
    feed = {session.get_inputs()[0].name: _chw(image)}
    return lambda: session.run(None, feed), _torchvision_order(tuple), {
        "version": f"onnxruntime {onnxruntime.__version__}"}


# ---------------------------------------------------------------------------- this python

def _ov_info(compiled):
    return {"version": f"openvino {_openvino_version()}", "openvino_properties": {
        k: str(compiled.get_property(k)) for k in OV_PROPERTIES}}


def _openvino_version():
    import openvino
    return openvino.__version__.split("-")[0]


def _openvino_onnx_engine(args, files, image):
    """torchvision's ONNX, compiled with the settings OpenVINOPredictor gives our IR."""
    import openvino

    from retinamask_tf.export.openvino_runner import compile_settings
    compiled = openvino.Core().compile_model(files["onnx"], "CPU",
                                             compile_settings(args.threads, args.precision))
    x = _chw(image)
    return (lambda: compiled(x), _torchvision_order(lambda out: tuple(out.values())),
            _ov_info(compiled))


def _openvino_ir_engine(args, files, image):
    from retinamask_tf.export.openvino_runner import OpenVINOPredictor
    predictor = OpenVINOPredictor(files["ir"], num_threads=args.threads, precision=args.precision)
    compiled = predictor.compiled
    batch = image[None]
    return lambda: compiled(batch), _our_detections, _ov_info(compiled)


def _our_detections(out):
    """(boxes, scores, classes) of our export's outputs (OpenVINO's, or TF's tensors)."""
    n = int(out["num_detections"][0])
    return tuple(np.asarray(out[k][0][:n]) for k in ("detection_boxes", "detection_scores",
                                                     "detection_classes"))


def _savedmodel_engine(args, files, image):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    serving = tf.saved_model.load(files[f"{args.engine}_{args.precision}"]).signatures[
        "serving_default"]
    batch = tf.constant(image[None])

    def run():
        out = serving(images=batch)
        out["num_detections"].numpy()  # (as bench/compare_torchvision.py's ours_worker)
        return out

    return run, _our_detections, {"version": f"tensorflow {tf.__version__}"}


ENGINE_SETUP = {"torchvision": _torchvision_engine, "onnxruntime": _onnxruntime_engine,
                "openvino_onnx": _openvino_onnx_engine, "openvino_ir": _openvino_ir_engine,
                "savedmodel": _savedmodel_engine, "savedmodel_frozen": _savedmodel_engine}


def worker(args):
    """Times one engine at one precision; prints its row, with the detections of its last
    call matched to torchvision's float32 ones."""
    files = _files(args.work, args.size)
    image = np.load(files["image"])
    run, detections, info = ENGINE_SETUP[args.engine](args, files, image)
    last = []

    def call():
        last[:] = [run()]

    row = timed(call, args.repeats)
    m = _match(detections(last[0]), np.load(files["torch_det"]))
    row.update(info, detections=m["ours"], matched=m["matched"],
               max_box_err_px=m["max_box_err_px"])
    print(json.dumps(row))


def _match(ours, ref):
    """``reference_parity.match_detections`` of ``ours`` (yxyx) against torchvision's
    float32 detections in ``ref`` (torch_detections.npz); ``ok``: the same detections."""
    from bench.reference_parity import match_detections
    theirs = (ref["boxes"][:, YXYX], ref["scores"], ref["labels"])
    m = match_detections(ours, theirs, SCORE_TOL, BOX_TOL_PX)
    m["ok"] = m["ours"] == m["theirs"] == m["matched"]
    return m


def _import_overrides(size):
    """Our model at the benchmark size: the resize an identity, padded as torchvision pads.
    (The source's conventions set none of these keys.)"""
    h, w = _hw(size)
    padded = [-(-v // PAD_STRIDE) * PAD_STRIDE for v in (h, w)]
    return [f"data.short_side={min(h, w)}", f"data.long_side={max(h, w)}",
            f"data.pad_stride={PAD_STRIDE}", f"data.padded_size=[{padded[0]}, {padded[1]}]"]


def ours_prepare(args):
    """Imports weights.pth, exports the SavedModels and the IR, and compares our float32
    SavedModel's (and ONNX Runtime's) detections with torchvision's."""
    import shutil

    import tensorflow as tf

    from retinamask_tf.export.openvino_ir import export_openvino
    from retinamask_tf.export.saved_model import export_saved_model
    from retinamask_tf.weights import importer

    files = _files(args.work, args.size)
    shutil.rmtree(files["model_dir"], ignore_errors=True)  # an interrupted earlier import
    importer.import_weights("torchvision_retinanet", files["weights"], files["model_dir"],
                            overrides=_import_overrides(args.size), say=lambda *_: None)
    export_saved_model(files["model_dir"], files["savedmodel_float32"])
    export_saved_model(files["model_dir"], files["savedmodel_bfloat16"], precision="bfloat16")
    export_saved_model(files["model_dir"], files["savedmodel_frozen_bfloat16"], freeze=True,
                       precision="bfloat16")
    export_openvino(files["model_dir"], os.path.dirname(files["ir"]))
    print(json.dumps({"versions": {"tensorflow": tf.__version__,
                                   "openvino": _openvino_version()},
                      "import_overrides": _import_overrides(args.size),
                      "detection_check": _detection_check(files)}))


def _detection_check(files):
    """torchvision's float32 detections on the image against our float32 SavedModel's and
    ONNX Runtime's (same class, score within SCORE_TOL, box within BOX_TOL_PX)."""
    import tensorflow as tf

    ref = np.load(files["torch_det"])
    serving = tf.saved_model.load(files["savedmodel_float32"]).signatures["serving_default"]
    ours = _our_detections(serving(images=tf.constant(np.load(files["image"])[None])))
    ort = (ref["ort_boxes"][:, YXYX], ref["ort_scores"], ref["ort_labels"])
    return {"score_tol": SCORE_TOL, "box_tol_px": BOX_TOL_PX,
            "savedmodel_vs_torchvision": _match(ours, ref),
            "onnxruntime_vs_torchvision": _match(ort, ref)}


# ---------------------------------------------------------------------------- main process

def prepare(args, size, env):
    """The exports and the detection check of one size (read back from ``--work`` when an
    earlier run prepared them with the same ``--init`` and image)."""
    from bench.reference_parity import input_image

    files = _files(args.work, size)
    wanted = {"init": args.init, "image": args.image}
    if os.path.exists(files["marker"]):
        with open(files["marker"]) as f:
            info = json.load(f)
        if {k: info.get(k) for k in wanted} != wanted:
            raise SystemExit(f"{files['folder']} was prepared with {info.get('init')!r} / "
                             f"{info.get('image')!r}: use another --work")
        return info
    os.makedirs(files["folder"], exist_ok=True)
    h, w = _hw(size)
    np.save(files["image"], input_image(args.image, h, w, 0))
    common = ["--size", size, "--work", args.work, "--threads", str(max(_threads(args)))]
    torch_info = run_worker([args.torch_python, __file__, "--worker", "torch_prepare", "--init",
                             args.init] + common, env, f"{size}: torchvision weights, ONNX export",
                            TAG)
    ours_info = run_worker([sys.executable, __file__, "--worker", "ours_prepare"] + common, env,
                           f"{size}: import, SavedModel and IR exports, detection check", TAG)
    info = dict(wanted, versions={**torch_info.pop("versions"), **ours_info.pop("versions")},
                **torch_info, **ours_info)
    with open(files["marker"], "w") as f:
        json.dump(info, f, indent=1)
    return info


def _threads(args):
    return [int(t) for t in args.threads.split(",") if t]


def _jobs(args, size, threads):
    """One group: every row at one size and thread count, the baseline first."""
    jobs = []
    for engine, precision in ROWS:
        if precision not in args.precisions.split(",") and (engine, precision) != BASELINE:
            continue
        python = args.torch_python if ENGINES[engine][0] == "torch" else sys.executable
        jobs.append(dict(engine=engine, precision=precision, size=size, threads=threads,
                         cmd=[python, __file__, "--worker", "run", "--engine", engine,
                              "--precision", precision, "--size", size, "--threads",
                              str(threads), "--repeats", str(args.repeats), "--work", args.work]))
    return jobs


KEYS = ("engine", "precision", "size", "threads")


def _run_group(group, env, r):
    """One round of a group; each row's ratios to the baseline and to OpenVINO on
    torchvision's ONNX at its precision, taken within the round."""
    rows = [dict(run_worker(job["cmd"], env, f"round {r}: {job['engine']} {job['precision']} "
                            f"{job['size']} {job['threads']} thread(s)", TAG),
                 **{k: job[k] for k in KEYS}, round=r) for job in group]
    base = next(x for x in rows if (x["engine"], x["precision"]) == BASELINE)
    for row in rows:
        row["ratio_to_torchvision"] = row["median_s"] / base["median_s"]
        ov = next((x for x in rows if x["engine"] == "openvino_onnx"
                   and x["precision"] == row["precision"]), None)
        row["ratio_to_openvino_onnx"] = row["median_s"] / ov["median_s"] if ov else None
    return rows


def _summary(job, measured):
    """A row over all rounds: median time over every call, median ratios (and range)."""
    runs = [x for x in measured if all(x[k] == job[k] for k in KEYS)]
    ratios = sorted(x["ratio_to_torchvision"] for x in runs)
    ov = [x["ratio_to_openvino_onnx"] for x in runs if x["ratio_to_openvino_onnx"] is not None]
    row = {k: job[k] for k in KEYS}
    row.update(median_s=statistics.median(t for x in runs for t in x["times_s"]),
               min_s=min(x["min_s"] for x in runs), rounds=len(runs),
               round_medians_s=[x["median_s"] for x in runs],
               ratio_to_torchvision=statistics.median(ratios),
               ratio_range=[ratios[0], ratios[-1]],
               ratio_to_openvino_onnx=statistics.median(ov) if ov else None,
               peak_rss_mb=max(x["peak_rss_mb"] for x in runs),
               detections=sorted({(x["detections"], x["matched"]) for x in runs}),
               version=runs[-1]["version"])
    if "openvino_properties" in runs[-1]:
        row["openvino_properties"] = runs[-1]["openvino_properties"]
    return row


def _table_line(r):
    base = (r["engine"], r["precision"]) == BASELINE
    ratio = "1" if base else (f"{r['ratio_to_torchvision']:.2f} "
                              f"({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})")
    ov = "" if r["ratio_to_openvino_onnx"] is None else f"{r['ratio_to_openvino_onnx']:.2f}"
    precision = r["precision"] + (" (autocast)" if r["engine"] == "torchvision"
                                  and r["precision"] == "bfloat16" else "")
    return (f"| {ENGINES[r['engine']][1]} | {precision} | {r['size']} | {r['threads']} | "
            f"{r['median_s']:.3f} | {ratio} | {ov} | {r['peak_rss_mb']:.0f} |")


def _check_line(size, info):
    c = info["detection_check"]
    ours, ort = c["savedmodel_vs_torchvision"], c["onnxruntime_vs_torchvision"]
    return (f"- {size}: torchvision {ours['theirs']} detections; our float32 SavedModel "
            f"{ours['ours']}, {ours['matched']} matched (worst box error "
            f"{ours['max_box_err_px']:.2g} px){'' if ours['ok'] else ' -- MISMATCH'}; ONNX "
            f"Runtime {ort['ours']}, {ort['matched']} matched"
            f"{'' if ort['ok'] else ' -- MISMATCH'}.")


def _header(args, versions, rows):
    streams = sorted({r["openvino_properties"]["NUM_STREAMS"] for r in rows
                      if "openvino_properties" in r})
    return (f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f". Batch 1, {os.path.basename(args.image)} resized to the input size, the whole "
            f"model (pre-processing to NMS); weights: --init {args.init}; {args.rounds} "
            f"interleaved rounds x {args.repeats} calls, each row in its own process; OpenVINO "
            f"streams: {', '.join(streams) or '-'}. Ratios: median over rounds (range), each "
            "taken within its round at the same threads.")


def _detection_lines(prepared, rows):
    lines = [f"Detections on the image (same class, score within {SCORE_TOL:g}, box within "
             f"{BOX_TOL_PX:g} px of torchvision's float32 eager ones):"]
    lines += [_check_line(size, info) for size, info in prepared.items()]
    if rows:
        counts = "; ".join(f"{r['engine']} {r['precision']} {r['size']} "
                           + ", ".join(f"{n} ({m} matched)" for n, m in r["detections"])
                           for r in rows if r["threads"] == rows[0]["threads"])
        lines.append(f"- each row's own (its last timed call): {counts}. bfloat16 moves "
                     "scores by more than the tolerance; our OpenVINO IR, like our TFLite "
                     "files, drops candidates whose clipped box has no area, which "
                     "torchvision and the imported SavedModel keep "
                     "(postprocess.keep_empty_boxes).")
    return lines


def _report(args, prepared, rows, measured):
    versions = next(iter(prepared.values()))["versions"]
    result = {"machine": {"cpu": cpu_name(), "cpus": os.cpu_count()}, "versions": versions,
              "init": args.init, "image": args.image, "prepared": prepared, "rows": rows,
              "rounds": measured}
    lines = [_header(args, versions, rows), "",
             "| engine | precision | input | threads | median s | / torchvision float32 "
             "(range) | / OpenVINO on torchvision's ONNX, same precision | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_table_line(r) for r in rows]
    lines += [""] + _detection_lines(prepared, rows)
    write_results(args.out, "compare_cpu_serving", result, lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512x512", help="HxW list, e.g. 512x512,800x1333")
    p.add_argument("--threads", default="1,2", help="thread counts, each its own group")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds (0: prepare and check the detections only)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    p.add_argument("--precisions", default="float32,bfloat16",
                   help="float32 and/or bfloat16 rows (the baseline is always run)")
    p.add_argument("--init", default="drawn",
                   help="seed (torch.manual_seed(0) construction: no detections), drawn "
                        "(reference_parity's draw: detections), or a torchvision "
                        "retinanet_resnet50_fpn state dict .pth")
    p.add_argument("--torch_python", default=sys.executable,
                   help="a python with torch, torchvision, onnx and onnxruntime (default: "
                        "this one)")
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding coco128/ (default: $RETINAMASK_TEST_DATA)")
    p.add_argument("--image", default=None, help="the image (default: coco128's first)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--work", default=None,
                   help="folder for the weights and exports (default: a new temporary one); "
                        "what an earlier run prepared there is reused")
    p.add_argument("--worker", choices=["torch_prepare", "ours_prepare", "run"],
                   help=argparse.SUPPRESS)
    p.add_argument("--engine", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not set(args.precisions.split(",")) <= {"float32", "bfloat16"}:
        p.error(f"--precisions: float32 and/or bfloat16, got {args.precisions!r}")
    if args.worker:
        args.threads = int(args.threads)
        return {"torch_prepare": torch_prepare, "ours_prepare": ours_prepare,
                "run": worker}[args.worker](args)

    if args.init not in ("seed", "drawn"):
        args.init = os.path.abspath(args.init)
    if args.image is None:
        if not args.datasets:
            p.error("--datasets (or $RETINAMASK_TEST_DATA): the folder holding coco128/; "
                    "or --image")
        folder = os.path.join(args.datasets, "coco128", "images")
        args.image = os.path.join(folder, sorted(os.listdir(folder))[0])
    args.image = os.path.abspath(args.image)
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="compare_cpu_serving_"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OPENVINO_TELEMETRY_DISABLE="1",
               PYTHONPATH=REPO)
    sizes = [s for s in args.sizes.split(",") if s]
    prepared = {size: prepare(args, size, env) for size in sizes}
    groups = [_jobs(args, size, t) for size in sizes for t in _threads(args)]
    measured = [row for r in range(1, args.rounds + 1) for group in groups
                for row in _run_group(group, env, r)]
    rows = [_summary(job, measured) for group in groups for job in group] if measured else []
    _report(args, prepared, rows, measured)


if __name__ == "__main__":
    main()
