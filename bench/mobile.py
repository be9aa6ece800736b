"""Mobile detectors side by side on this CPU: ours under LiteRT against torchvision's
SSDLite and Ultralytics' YOLO n-seg models, the whole pipeline of each, 320x320.

  python -m venv /tmp/mobilevenv && /tmp/mobilevenv/bin/pip install torch==2.14.1 \\
      torchvision==0.29.1 onnx onnxruntime ultralytics ai-edge-litert litert-torch
  python bench/mobile.py --bench_python /tmp/mobilevenv/bin/python [--threads 1,2] \\
      [--rounds 3] [--repeats 30] [--config configs/mobile_coco.yaml]

Engines (each measurement in its own process, so its peak RSS is its own; the engines run
in interleaved rounds, because this machine's speed drifts by tens of percent over minutes):
  ours float32 / int8 / int8 + masks
             ``--config``'s model (80 classes, ImageNet weights off) with random weights,
             exported by our TFLite export (int8 calibrated on 32 coco128 images; the mask
             file with ``model.mask_head.num_masks=10``), run by ``LiteRTPredictor`` on the
             image: letterbox, the interpreter (network, box decoding, NMS; the mask head),
             pasting the masks into the image.
  ours int8 full v3
             the same model with the full MobileNetV3 (``minimalistic=false``: hard-swish,
             squeeze-excite, 5x5 kernels) in int8, to show what the minimalistic one saves.
  torchvision ssdlite eager
             ``ssdlite320_mobilenet_v3_large(num_classes=91)`` in eval mode under
             ``torch.inference_mode``: its transform, network, decoding and NMS.
  torchvision ssdlite litert
             the same network converted by litert-torch (backbone + head: SSD's NMS does
             not convert, its box count is data-dependent) under LiteRT; normalisation in
             NumPy, decoding and NMS by torchvision's own ``postprocess_detections``.
  yolov8n-seg / yolo11n-seg onnxruntime
             built from Ultralytics' YAML (random weights, nothing downloaded), exported to
             ONNX at 320, run by Ultralytics' predictor (letterbox, ONNX Runtime, NMS, masks)
             with ONNX Runtime's intra-op threads set.
Scores: with random weights every engine is run so that its NMS sees every candidate, the
worst case: ours exported with ``postprocess.score_threshold=0``, SSDLite at its default
0.001 (below every softmax score), YOLO with ``conf=0``; at most 100 detections each
(SSDLite keeps its default 300).
Columns: parameters (ours: the detection-only model / + the mask head), file size, multiply-
adds of the network (counted on its TFLite graph: convolutions, depthwise and transposed
convolutions, fully-connected layers and matrix products), median ms and peak RSS per
thread count, and each time over SSDLite eager's in the same round (median over rounds).
Writes ``<out>/mobile.json`` and ``mobile.md``; the header names the CPU.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, random_run_dir, run_worker, timed, write_results  # noqa: E402

SIZE = 320
# engine -> (model folder, TFLite file): the config's model, and the same with the full
# (not minimalistic) MobileNetV3 in int8
OURS = {"ours_float32": ("ours", "model_float32"), "ours_int8": ("ours", "model_int8"),
        "ours_int8_masks": ("ours", "model_int8_masks"),
        "ours_int8_full_v3": ("ours_full_v3", "model_int8")}
TORCH = ("ssdlite_eager", "ssdlite_litert", "yolov8n-seg_onnxruntime", "yolo11n-seg_onnxruntime")
REFERENCE = "ssdlite_eager"


# ----------------------------------------------------------------------- multiply-adds
def tflite_macs(path):
    """Multiply-adds of one invocation of a TFLite file's convolutions, depthwise and
    transposed convolutions, fully-connected layers and batch matrix products (what a
    network costs; element-wise ops and post-processing are not counted). Needs only
    ai-edge-litert and NumPy."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    shapes = {t["index"]: tuple(int(v) for v in t["shape"])
              for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        name, ins = op["op_name"], [i for i in op["inputs"] if i >= 0]
        out = shapes[op["outputs"][0]]
        if name == "CONV_2D":  # weights [O, kh, kw, I]
            _, kh, kw, cin = shapes[ins[1]]
            total += int(np.prod(out)) * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, O]
            _, kh, kw, _ = shapes[ins[1]]
            total += int(np.prod(out)) * kh * kw
        elif name == "TRANSPOSE_CONV":  # inputs: output shape, weights [O, kh, kw, I], input
            _, kh, kw, _ = shapes[ins[1]]
            total += int(np.prod(shapes[ins[2]])) * kh * kw * shapes[ins[1]][0]
        elif name == "FULLY_CONNECTED":  # weights [O, I]
            total += int(np.prod(out)) * shapes[ins[1]][-1]
        elif name == "BATCH_MATMUL":
            total += int(np.prod(out)) * shapes[ins[0]][-1]
    return total


# ------------------------------------------------------------------------------- ours
def ours_prepare(args):
    """Random-weight run directories of ``--config``'s model at 80 classes (data keys on
    coco128 for the int8 calibration), exported: float32 and int8, and the int8 mask file
    with 10 masks; and int8 of the same with the full MobileNetV3. Prints params, file
    sizes and multiply-adds."""
    info = _ours_model(args, "ours", [], ("float32", "int8"), True)
    full = _ours_model(args, "ours_full_v3", ["model.backbone.minimalistic=false",
                                              "model.backbone.weights=null"], ("float32", "int8"),
                       False)
    info["ours_int8_full_v3"] = full["ours_int8"]
    print(json.dumps(info))


def _ours_model(args, folder, overrides, variants, masks):
    from retinamask_tf import config as C
    from retinamask_tf.export import tflite

    model_dir = os.path.join(args.work, folder)
    export = os.path.join(model_dir, "tflite")
    coco = os.path.join(args.datasets, "coco128")
    cfg = C.load_config([args.config], [
        "model.backbone.weights=null", "model.num_classes=80", "data.kind=coco",
        f"data.train_json={coco}/annotations.json", f"data.train_images={coco}/images",
        f"data.val_json={coco}/annotations.json", f"data.val_images={coco}/images"]
        + list(overrides))
    model = random_run_dir(cfg, model_dir)
    mask_params = model.mask_branch.count_params()
    settings = ["postprocess.score_threshold=0.0", "model.mask_head.num_masks=10"]
    paths = tflite.export_tflite(model_dir, export, variants, num_calibration_images=32,
                                 progress=None, overrides=settings, include_masks=masks)
    info = {}
    for key, path in paths.items():
        info["ours_" + key] = {"file_mb": os.path.getsize(path) / 1e6,
                               "macs": tflite_macs(paths["float32_masks" if "masks" in key
                                                         else "float32"]),
                               "params": model.count_params() - (0 if "masks" in key else mask_params)}
    return info


def ours_worker(args):
    import numpy as np
    from PIL import Image

    from retinamask_tf.export.litert_runner import LiteRTPredictor

    image = np.asarray(Image.open(args.image).convert("RGB"))
    folder, name = OURS[args.engine]
    path = os.path.join(args.work, folder, "tflite", f"{name}.tflite")
    predictor = LiteRTPredictor(path, num_threads=args.threads)
    row = timed(lambda: predictor(image), args.repeats)
    row["detections"] = len(predictor(image))
    print(json.dumps(row))


# ------------------------------------------------------------------- torch side (venv)
def _ssdlite():
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=91).eval()


def _network(model):
    """SSDLite's normalisation, backbone and head as one module (what litert-torch
    converts): [1, 3, 320, 320] in [0, 1] -> (box deltas [1, A, 4], class logits [1, A, 91])."""
    import torch

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = model.backbone, model.head
            self.mean = torch.tensor(model.transform.image_mean)[None, :, None, None]
            self.std = torch.tensor(model.transform.image_std)[None, :, None, None]

        def forward(self, x):
            out = self.head(list(self.backbone((x - self.mean) / self.std).values()))
            return out["bbox_regression"], out["cls_logits"]
    return Network().eval()


def _yolo(name, work):
    """(ONNX path, LiteRT path, params) of Ultralytics' ``name`` built from its YAML."""
    import shutil

    from ultralytics import YOLO

    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)

    def exported(suffix):
        return next((os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
                     if f.endswith(suffix)), None)
    for fmt, suffix, extra in (("onnx", ".onnx", {"simplify": False, "dynamic": False}),
                               ("litert", ".tflite", {})):
        if not exported(suffix):
            out = YOLO(f"{name}.yaml").export(format=fmt, imgsz=SIZE, verbose=False, **extra)
            shutil.move(str(out), os.path.join(folder, os.path.basename(str(out).rstrip("/"))))
    onnx_path, lite = exported(".onnx"), exported(".tflite")
    params = sum(p.numel() for p in YOLO(f"{name}.yaml").model.parameters())
    return onnx_path, lite, params


def torch_prepare(args):
    """Converts SSDLite's network with litert-torch and exports the YOLO models; prints
    params, file sizes and the TFLite files (multiply-adds are counted by the caller)."""
    import torch

    model = _ssdlite()
    lite = os.path.join(args.work, "ssdlite_network.tflite")
    if not os.path.exists(lite):
        import litert_torch
        litert_torch.convert(_network(model), (torch.rand(1, 3, SIZE, SIZE),)).export(lite)
    state = os.path.join(args.work, "ssdlite.pth")
    torch.save(model.state_dict(), state)
    params = sum(p.numel() for p in model.parameters())
    info = {"ssdlite_eager": {"params": params, "file_mb": os.path.getsize(state) / 1e6,
                              "tflite": lite, "version": f"torch {torch.__version__}"},
            "ssdlite_litert": {"params": params, "file_mb": os.path.getsize(lite) / 1e6,
                               "tflite": lite}}
    for name in ("yolov8n-seg", "yolo11n-seg"):
        onnx_path, yolo_lite, yolo_params = _yolo(name, args.work)
        info[f"{name}_onnxruntime"] = {"params": yolo_params, "tflite": yolo_lite,
                                       "file_mb": os.path.getsize(onnx_path) / 1e6}
    print(json.dumps(info))


def torch_worker(args):
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    if args.engine == "ssdlite_eager":
        model = _ssdlite()
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0

        def call():
            with torch.inference_mode():
                return len(model([x])[0]["boxes"])
    elif args.engine == "ssdlite_litert":
        from ai_edge_litert.interpreter import Interpreter
        from torchvision.models.detection.image_list import ImageList

        model = _ssdlite()
        interpreter = Interpreter(model_path=os.path.join(args.work, "ssdlite_network.tflite"),
                                  num_threads=args.threads)
        runner = interpreter.get_signature_runner()
        input_name = next(iter(runner.get_input_details()))
        with torch.inference_mode():  # anchors depend on the sizes only: made once
            x0 = torch.zeros(1, 3, SIZE, SIZE)
            features = list(model.backbone(x0).values())
            anchors = model.anchor_generator(ImageList(x0, [(SIZE, SIZE)]), features)

        def call():
            x = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
            out = list(runner(**{input_name: x}).values())
            deltas, logits = sorted(out, key=lambda a: a.shape[-1])  # 4 < 91 columns
            with torch.inference_mode():
                det = model.postprocess_detections(
                    {"bbox_regression": torch.from_numpy(deltas),
                     "cls_logits": torch.from_numpy(logits)}, anchors, [(SIZE, SIZE)])
                det = model.transform.postprocess(det, [(SIZE, SIZE)], [image.shape[:2]])
            return len(det[0]["boxes"])
    else:  # yolo*_onnxruntime
        import onnxruntime

        from ultralytics import YOLO

        session = onnxruntime.InferenceSession

        def with_threads(path, options=None, **kwargs):  # Ultralytics sets no thread count
            options = options or onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            return session(path, options, **kwargs)
        onnxruntime.InferenceSession = with_threads
        name = args.engine[:-len("_onnxruntime")]
        model = YOLO(os.path.join(args.work, name, f"{name}.onnx"), task="segment")

        def call():
            result = model.predict(image[..., ::-1], imgsz=SIZE, conf=0.0, max_det=100,
                                   verbose=False)[0]  # Ultralytics takes BGR arrays
            return len(result.boxes)
    row = timed(call, args.repeats)
    row["detections"] = call()
    print(json.dumps(row))


# ------------------------------------------------------------------------------- main
def _image(args):
    """The one 320x320 RGB image every engine reads: coco128's first image, resized."""
    from PIL import Image

    path = os.path.join(args.work, "image_320.png")
    if not os.path.exists(path):
        images = os.path.join(args.datasets, "coco128", "images")
        first = sorted(os.listdir(images))[0]
        Image.open(os.path.join(images, first)).convert("RGB").resize(
            (SIZE, SIZE), Image.BILINEAR).save(path)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench_python", required=False,
                   help="a python with torch, torchvision, onnxruntime, ultralytics, "
                        "ai-edge-litert and litert-torch")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "mobile_coco.yaml"))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30, help="timed calls per process")
    p.add_argument("--datasets", default=os.environ.get("RETINAMASK_TEST_DATA"),
                   help="folder holding coco128/ (default: $RETINAMASK_TEST_DATA)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--work", default=None, help="folder for the models (default: a new "
                   "temporary one); what an earlier run prepared there is reused")
    p.add_argument("--worker", choices=["ours_prepare", "ours", "torch_prepare", "torch"],
                   help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = int(args.threads.split(",")[0])
        return {"ours_prepare": ours_prepare, "ours": ours_worker,
                "torch_prepare": torch_prepare, "torch": torch_worker}[args.worker](args)
    if not args.bench_python:
        p.error("--bench_python: the venv with the peers (see the docstring)")
    if not args.datasets:
        p.error("--datasets (or $RETINAMASK_TEST_DATA): the folder holding coco128/")
    args.work = args.work or tempfile.mkdtemp(prefix="bench_mobile_")
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, YOLO_OFFLINE="1",
               YOLO_CONFIG_DIR=os.path.join(args.work, "ultralytics"))
    image = _image(args)
    common = ["--work", args.work, "--datasets", args.datasets]
    info = {}
    if not os.path.exists(os.path.join(args.work, "prepared.json")):
        info.update(run_worker([sys.executable, __file__, "--worker", "ours_prepare",
                                "--config", args.config] + common, env, "prepare ours", "mobile"))
        info.update(run_worker([args.bench_python, __file__, "--worker", "torch_prepare"]
                               + common, env, "prepare the peers", "mobile"))
        for engine in TORCH:
            info[engine]["macs"] = tflite_macs(info[engine].pop("tflite"))
        info["versions"] = subprocess.run(
            [args.bench_python, "-c", "import torch, torchvision, onnxruntime, ultralytics; "
             "print(torch.__version__, torchvision.__version__, onnxruntime.__version__, "
             "ultralytics.__version__)"], capture_output=True, text=True, env=env).stdout.split()
        with open(os.path.join(args.work, "prepared.json"), "w") as f:
            json.dump(info, f)
    with open(os.path.join(args.work, "prepared.json")) as f:
        info = json.load(f)

    threads = [int(t) for t in args.threads.split(",")]
    measured = []
    for r in range(args.rounds):
        for t in threads:
            rows = {}
            for engine in TORCH[:1] + tuple(OURS) + TORCH[1:]:
                python = sys.executable if engine in OURS else args.bench_python
                worker = "ours" if engine in OURS else "torch"
                rows[engine] = dict(run_worker(
                    [python, __file__, "--worker", worker, "--engine", engine, "--image", image,
                     "--threads", str(t), "--repeats", str(args.repeats)] + common, env,
                    f"round {r + 1}, {t} thread(s): {engine}", "mobile"),
                    engine=engine, threads=t, round=r + 1)
            for row in rows.values():
                row["ratio"] = row["median_s"] / rows[REFERENCE]["median_s"]
                row.pop("times_s")
                measured.append(row)
    table = []
    for t in threads:
        for engine in tuple(OURS) + TORCH:
            runs = [m for m in measured if m["engine"] == engine and m["threads"] == t]
            ratios = sorted(m["ratio"] for m in runs)
            table.append(dict(info[engine], engine=engine, threads=t,
                              median_ms=1000 * statistics.median(m["median_s"] for m in runs),
                              ratio=statistics.median(ratios), ratio_range=[ratios[0], ratios[-1]],
                              peak_rss_mb=max(m["peak_rss_mb"] for m in runs),
                              detections=runs[-1]["detections"]))
    machine = {"cpu": cpu_name(), "cpus": os.cpu_count()}
    result = {"machine": machine, "versions": info["versions"], "config": args.config,
              "rounds": args.rounds, "repeats": args.repeats, "rows": table, "measured": measured}
    lines = [f"Machine: {machine['cpu']}, {machine['cpus']} CPUs; torch/torchvision/"
             f"onnxruntime/ultralytics {' / '.join(info['versions'])}; {args.rounds} interleaved "
             f"rounds x {args.repeats} calls per engine; 320x320, whole pipeline, random weights, "
             "NMS over every candidate.", "",
             "| engine | threads | params (M) | file (MB) | multiply-adds (G) | median ms | "
             "/ SSDLite eager (range) | peak RSS MB | detections |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['engine']} | {row['threads']} | {row['params'] / 1e6:.2f} | "
                     f"{row['file_mb']:.2f} | {row['macs'] / 1e9:.2f} | {row['median_ms']:.1f} | "
                     f"{row['ratio']:.2f} ({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f})"
                     f" | {row['peak_rss_mb']:.0f} | {row['detections']} |")
    write_results(args.out, "mobile", result, lines)


if __name__ == "__main__":
    main()
