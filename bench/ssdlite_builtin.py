"""torchvision's SSDLite trained from scratch on the built-in synthetic shapes dataset.

A reference point for our own mobile model: ``ssdlite320_mobilenet_v3_large`` with no
pretrained weights (``weights=None, weights_backbone=None``, ``num_classes`` = categories +
1 for background), trained on the same COCO-format data with the same budget (training
images seen = batch size x steps), then scored with COCOeval (bbox) on the val split.

Benchmark-only: it runs in a separate PyTorch venv (torch, torchvision, pycocotools; no
TensorFlow), e.g.

  /path/to/torchvenv/bin/python bench/ssdlite_builtin.py --lr 0.01 \\
      --data_dir ~/.cache/retinamask_tf/shapes-<hash> --out bench/results/ssdlite_builtin.json

``--data_dir``: the built-in dataset's folder (train.json, val.json, images/), which the
first demo run generates under ``~/.cache/retinamask_tf/`` (configs/demo.yaml and
configs/mobile_demo.yaml use the same set; its name ends in a hash of its settings).

Training: SGD (momentum, weight decay), linear warm-up from 0.001 x lr to lr over
``--warmup_steps``, x0.1 at each of ``--lr_drop_steps``; batches drawn from a seeded
per-epoch shuffle of the training images; the only augmentation is a random horizontal
flip (``--hflip``, p=0.5). Images go in as float [0, 1] at their own size; torchvision's
transform resizes them to 320x320 and normalises. Crowd and degenerate (< 1 px) boxes are
skipped. Evaluation uses torchvision's default post-processing (score 0.001, 300
detections per image), batches of 8, boxes back in original pixels.

Writes ``--out`` (JSON: flags, versions, CPU, parameters, wall time, steps/s, final loss,
COCO bbox stats) and the trained ``state_dict`` beside it (``<out without .json>.pth``).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import cpu_name  # noqa: E402  (no TensorFlow)

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True,
                   help="the built-in dataset's folder: train.json, val.json and images/")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default %(default)s)")
    p.add_argument("--batch_size", type=int, default=4, help="images per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.01,
                   help="peak learning rate (default %(default)s; 0.04 scored lower)")
    p.add_argument("--warmup_steps", type=int, default=200,
                   help="linear warm-up from 0.001 x lr (default %(default)s)")
    p.add_argument("--lr_drop_steps", default="1500,1800",
                   help="comma-separated steps where lr is multiplied by 0.1 (default %(default)s)")
    p.add_argument("--weight_decay", type=float, default=4e-5,
                   help="SGD weight decay, torchvision's SSDLite recipe (default %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, shuffling, flips (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default %(default)s)")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/ssdlite_builtin.json",
                   help="results JSON; the state_dict goes beside it as .pth (default %(default)s)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flip, p=0.5 (default on; --no-hflip to disable)")
    return p.parse_args(argv)


class Split:
    """One COCO JSON: image paths, and per image the xyxy boxes and contiguous labels."""

    def __init__(self, data_dir, name):
        self.json_path = data_dir / f"{name}.json"
        coco = json.loads(self.json_path.read_text())
        self.cat_ids = sorted(c["id"] for c in coco["categories"])
        label_of = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        anns = {}
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            if a.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            anns.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], label_of[a["category_id"]]))
        self.images = coco["images"]
        self.paths = [self._find(data_dir / "images", name, im["file_name"]) for im in self.images]
        self.targets = []
        for im in self.images:
            items = anns.get(im["id"], [])
            self.targets.append({
                "boxes": torch.tensor([b for b, _ in items], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([l for _, l in items], dtype=torch.int64)})

    @staticmethod
    def _find(root, split, file_name):
        for p in (root / file_name, root / split / file_name):
            if p.is_file():
                return p
        raise FileNotFoundError(f"{file_name} not in {root} or {root / split}")

    def image(self, i):
        return decode_image(read_file(str(self.paths[i])), mode=ImageReadMode.RGB).float() / 255.0


def lr_factor(step, warmup, drops):
    if step < warmup:
        return 0.001 + (1.0 - 0.001) * step / warmup
    return 0.1 ** sum(step >= d for d in drops)


def train(model, data, args):
    drops = [int(s) for s in args.lr_drop_steps.split(",") if s.strip()]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    order, pos, losses = [], 0, []
    model.train()
    start = tick = time.perf_counter()
    for step in range(args.steps):
        images, targets = [], []
        while len(images) < args.batch_size:
            if pos == len(order):
                order, pos = torch.randperm(len(data.images), generator=gen).tolist(), 0
            i = order[pos]
            pos += 1
            img, tgt = data.image(i), dict(data.targets[i])
            if args.hflip and torch.rand((), generator=gen).item() < 0.5:
                width = img.shape[-1]
                img = img.flip(-1)
                tgt["boxes"] = torch.stack([width - tgt["boxes"][:, 2], tgt["boxes"][:, 1],
                                            width - tgt["boxes"][:, 0], tgt["boxes"][:, 3]], dim=1)
            images.append(img)
            targets.append(tgt)
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(step, args.warmup_steps, drops)
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            now = time.perf_counter()
            n = (step % 100) + 1
            print(f"step {step + 1}/{args.steps}  loss {sum(losses[-n:]) / n:.4f}  "
                  f"lr {opt.param_groups[0]['lr']:.5f}  {n / (now - tick):.2f} steps/s", flush=True)
            tick = now
    wall = time.perf_counter() - start
    return wall, losses


@torch.inference_mode()
def evaluate(model, data, batch=8):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model.eval()
    dets = []
    for s in range(0, len(data.images), batch):
        idx = list(range(s, min(s + batch, len(data.images))))
        for i, out in zip(idx, model([data.image(i) for i in idx])):
            for (x1, y1, x2, y2), score, label in zip(out["boxes"].tolist(), out["scores"].tolist(),
                                                      out["labels"].tolist()):
                dets.append({"image_id": data.images[i]["id"], "category_id": data.cat_ids[label - 1],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    if not dets:  # pycocotools' loadRes cannot take an empty list
        return [0.0] * 12, 0
    gt = COCO(str(data.json_path))
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats], len(dets)  # -1: no GT in that area range


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_data, val_data = Split(args.data_dir, "train"), Split(args.data_dir, "val")
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                          num_classes=len(train_data.cat_ids) + 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ssdlite320_mobilenet_v3_large: {n_params} parameters, {len(train_data.images)} train / "
          f"{len(val_data.images)} val images, {len(train_data.cat_ids)} classes", flush=True)
    wall, losses = train(model, train_data, args)
    final_loss = sum(losses[-100:]) / len(losses[-100:])
    stats, n_dets = evaluate(model, val_data)
    result = {
        "flags": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu_name(),
        "parameters": n_params, "train_wall_s": round(wall, 1),
        "steps_per_s": round(args.steps / wall, 4), "final_loss": final_loss,
        "loss_is_finite": all(l == l and abs(l) != float("inf") for l in losses),
        "val_detections": n_dets,
        "bbox": dict(zip(STAT_NAMES, stats[:9])),
        "bbox_stats": stats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    torch.save(model.state_dict(), args.out.with_suffix(".pth"))
    print(json.dumps({k: result[k] for k in ("train_wall_s", "steps_per_s", "final_loss", "bbox")}, indent=2))


if __name__ == "__main__":
    main()
