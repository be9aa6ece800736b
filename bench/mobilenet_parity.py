"""Our MobileNetV3 with torchvision's ImageNet layout imported (``--source=
torchvision_mobilenet_v3``) against torchvision itself: C3, C4 and C5 on seeded random
weights and batch-norm statistics.

  python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
  python bench/mobilenet_parity.py --torch_python /tmp/torchvenv/bin/python \\
      [--arch mobilenet_v3_large --width 1.0 --size 224x320]
  python bench/mobilenet_parity.py --torch_python ... --golden   # rewrite the CI golden files

A torch process builds torchvision's model with random weights (and random batch-norm
statistics, so that every tensor matters), saves its state dict as a ``.pth`` and the
features of a random input (taken with forward hooks: C3 and C4 are the expansions feeding
the stride-16 and stride-32 depthwise convolutions, C5 the last 1x1 conv), then this
process imports the ``.pth`` with our torch-free reader into our model and compares. The
relative difference is max |ours - theirs| / max |theirs| per level; the target is 1e-4.
``--golden`` writes ``tests/weights/golden/torchvision_mobilenet_v3_small.{pth,npz}``
(mobilenet_v3_small's features, weights stored in float16, features computed with those
float16 values) for ``tests/weights/test_mobilenet_golden.py``. Writes
``<out>/mobilenet_parity.json`` and ``.md``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.report import cpu_name, write_results  # noqa: E402

GOLDEN = os.path.join(REPO, "tests", "weights", "golden", "torchvision_mobilenet_v3_small")


def torch_worker(args):
    """Random torchvision MobileNetV3 -> ``<prefix>.pth`` and ``<prefix>.npz`` (input NHWC,
    C3 / C4 / C5 NHWC)."""
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.arch)(weights=None, width_mult=args.width).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        if args.half:  # store float16; compute with exactly those values
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    # C3 / C4 / C5 as ours defines them: the last activation computed at strides 8, 16, 32
    # (the expansions feeding the stride-2 depthwise convs, and the last 1x1 conv).
    h, w = (int(v) for v in args.size.split("x"))
    last = {}

    def keep(module, inputs, output):
        stride = h // output.shape[2]
        if stride in (8, 16, 32) and output.shape[2] * stride == h:
            last[stride] = output
    for m in model.features.modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.Hardswish)):
            m.register_forward_hook(keep)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        model.features(x)
    out = {"input": x.permute(0, 2, 3, 1).numpy()}
    out.update({f"C{level}": last[2 ** level].permute(0, 2, 3, 1).numpy() for level in (3, 4, 5)})
    state = {k: (v.half() if args.half and v.is_floating_point() else v)
             for k, v in model.state_dict().items()
             if not (args.half and k.startswith("classifier."))}  # golden: features only
    torch.save(state, args.prefix + ".pth")
    np.savez_compressed(args.prefix + ".npz", **out)
    print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                      "params": sum(p.numel() for p in model.features.parameters())}))


def compare(pth_path, npz_path):
    """Relative difference per level of our imported model against the saved features."""
    import numpy as np

    from retinamask_tf.modeling import factory
    from retinamask_tf.weights import convert, importer, pth, sources

    source = sources.get("torchvision_mobilenet_v3")
    state = pth.read_state_dict(pth_path)
    config = importer.resolve_config(source, state, overrides=["model.num_classes=2"])
    model = factory.build_model(config)
    convert.load(model, state, source)
    golden = np.load(npz_path)
    ours = model.backbone(golden["input"], training=False)
    return {level: float(np.abs(ours[level].numpy() - golden[level]).max()
                         / np.abs(golden[level]).max()) for level in ("C3", "C4", "C5")}, config


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch_python", default=sys.executable)
    p.add_argument("--arch", default="mobilenet_v3_large",
                   choices=["mobilenet_v3_large", "mobilenet_v3_small"])
    p.add_argument("--width", type=float, default=1.0, help="1.0: the only width whose layers "
                   "Keras' MobileNetV3 shares")
    p.add_argument("--size", default="224x320", help="input height x width (multiples of 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden", action="store_true", help="write the CI golden files")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return torch_worker(args)
    if args.golden:
        args.arch, args.width, args.size, args.half = "mobilenet_v3_small", 1.0, "64x96", True
        prefix = GOLDEN
    else:
        prefix = os.path.join(tempfile.mkdtemp(prefix="mobilenet_parity_"), args.arch)
    cmd = [args.torch_python, __file__, "--worker", "--arch", args.arch, "--width",
           str(args.width), "--size", args.size, "--seed", str(args.seed), "--prefix", prefix]
    done = subprocess.run(cmd + (["--half"] if args.half else []), capture_output=True,
                          text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit("the torch worker failed")
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    errors, config = compare(prefix + ".pth", prefix + ".npz")
    b = config.model.backbone
    result = {"machine": cpu_name(), "versions": versions, "arch": args.arch,
              "width": args.width, "size": args.size, "imported_as": f"{b.name} {b.alpha:g}",
              "relative_difference": errors, "files": [prefix + ".pth", prefix + ".npz"]}
    lines = [f"torchvision {versions['torchvision']} {args.arch} width {args.width:g} "
             f"({versions['params']} feature parameters, random weights and statistics), "
             f"input {args.size}, imported as {b.name} {b.alpha:g}: max |ours - torchvision| "
             "/ max |torchvision|", "", "| level | relative difference |", "|---|---|"]
    lines += [f"| {k} | {v:.2e} |" for k, v in errors.items()]
    write_results(args.out, "mobilenet_parity" + ("_golden" if args.golden else ""), result, lines)


if __name__ == "__main__":
    main()
