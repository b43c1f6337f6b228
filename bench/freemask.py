"""Benchmark: batched free-mask stage vs a per-image implementation (FreeSOLO's script style).

Same backbone, same images, outputs checked equal. Reports images/s, the share of time spent
after the backbone forward, and peak RSS for growing numbers of images (each measurement in
a fresh process, so peaks do not mix).

    .venv/bin/python bench/freemask.py [--images 128] [--short-side 320] [--batch 16]
    GPU, the issue's setting: ... --device cuda --arch resnet50 --level res5 --short-side 800
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, record, sync


def load(n: int, data_dir: Path):
    from pipeline.data.sample import generate
    from pipeline.data.images import read_rgb
    from pipeline.data.coco import load_coco
    js = data_dir / "annotations" / "instances_train.json"
    if not js.is_file():
        generate(data_dir, splits={"train": 96, "val": 32}, progress=False)
    items = []
    for split in ("train", "val"):
        d = load_coco(data_dir / "annotations" / f"instances_{split}.json")
        items += [(dict(im, id=len(items) + k + 1), read_rgb(data_dir / split / im["file_name"]))
                  for k, im in enumerate(d["images"])]
    while len(items) < n:  # repeat images to reach n
        info, arr = items[len(items) % 128]
        items.append((dict(info, id=len(items) + 1), arr))
    return items[:n]


def worker(args) -> dict:
    import torch
    from omegaconf import OmegaConf
    from pipeline.models.backbone import ResNetFeatures, load_backbone_weights
    from pipeline.models.free_mask_predictor import FreeMaskPredictor
    from pipeline.data.transforms import same_size_batches, to_tensor
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.load(ROOT / "conf" / "freemask" / "default.yaml")
    cfg.short_side, cfg.max_size, cfg.batch_size = args.short_side, 2 * args.short_side, args.batch
    cfg.min_center_y_frac = 0.0
    cfg.feature_level = args.level
    if args.mode == "per_image":
        cfg.batch_size = 1
    bb = ResNetFeatures(args.arch)
    if args.weights and Path(args.weights).is_file():
        load_backbone_weights(bb, args.weights)
    dev = torch.device(args.device)
    pred = FreeMaskPredictor(bb, cfg, dev)
    items = load(args.images, ROOT / "data" / "sample")
    pred(items[:2])  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    anns = []
    for i in range(0, len(items), 32):  # a stream of shards, as the stage does it
        anns += pred(items[i:i + 32])
    sync(dev)
    total = time.perf_counter() - t0
    # backbone-only time over the same batches
    t0 = time.perf_counter()
    for i in range(0, len(items), 32):
        for shape, group in same_size_batches(items[i:i + 32], cfg.batch_size, cfg.short_side,
                                              cfg.max_size):
            with torch.no_grad():
                pred.features(torch.stack([to_tensor(a, shape) for _, a in group]))
    sync(dev)
    backbone = time.perf_counter() - t0
    out = {"mode": args.mode, "images": len(items), "seconds": total,
           "backbone_s": backbone, "post_s": max(total - backbone, 0.0),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(args.dump).write_text(json.dumps({"stats": out, "anns": anns}))
    return out


def compare(a, b) -> float:
    """Mean best-match mask IoU between two runs' masks (1.0 = identical)."""
    from pycocotools import mask as mu
    ious = []
    for per_a, per_b in zip(a, b):
        if len(per_a) != len(per_b):
            return 0.0
        for x, y in zip(per_a, per_b):
            rx = dict(x["segmentation"], counts=x["segmentation"]["counts"].encode())
            ry = dict(y["segmentation"], counts=y["segmentation"]["counts"].encode())
            ious.append(float(mu.iou([rx], [ry], [0])[0][0]))
    return sum(ious) / max(1, len(ious))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--short-side", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=str(ROOT / "outputs/cpu_sample/pretrain/backbone.pt"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--level", default="res4", help="feature level (FreeSOLO: res5)")
    ap.add_argument("--mode", choices=["batched", "per_image"])
    ap.add_argument("--dump")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(worker(args)))
        return
    runs = {}
    tmp = ROOT / "bench" / "results"
    tmp.mkdir(parents=True, exist_ok=True)
    plan = [("per_image", args.images), ("batched", args.images),
            ("batched", args.images // 2), ("batched", args.images * 2)]
    for mode, n in plan:
        dump = tmp / f"freemask_{mode}_{n}.json"
        cmd = [sys.executable, __file__, "--mode", mode, "--images", str(n), "--short-side",
               str(args.short_side), "--batch", str(args.batch), "--threads",
               str(args.threads), "--weights", args.weights, "--dump", str(dump),
               "--device", args.device, "--arch", args.arch, "--level", args.level]
        subprocess.run(cmd, check=True, capture_output=True)
        runs[(mode, n)] = json.loads(dump.read_text())
    a = runs[("per_image", args.images)]
    b = runs[("batched", args.images)]
    same = compare(a["anns"], b["anns"])
    print(f"free-mask benchmark: {args.arch} {args.level}, {args.device}, {args.images} images, "
          f"short side {args.short_side}, {args.threads} threads, batch {args.batch}")
    print("| run | images | img/s | backbone s | post-backbone s | post/backbone | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (mode, n), r in runs.items():
        s = r["stats"]
        print(f"| {mode} | {n} | {n / s['seconds']:.1f} | {s['backbone_s']:.2f} | "
              f"{s['post_s']:.2f} | {s['post_s'] / s['backbone_s']:.0%} | "
              f"{s['peak_rss_mb']:.0f} |")
    sa, sb = a["stats"], b["stats"]
    print(f"\nspeed-up batched vs per-image: {sa['seconds'] / sb['seconds']:.2f}x; "
          f"outputs: mean mask IoU {same:.4f} between the two (1.0 = identical)")
    record("freemask", [(f"free masks {args.arch} {args.level} {args.short_side} px, {mode}, "
                         f"{n} images", f"{n / r['stats']['seconds']:.1f} img/s, post/backbone "
                         f"{r['stats']['post_s'] / r['stats']['backbone_s']:.0%}")
                        for (mode, n), r in runs.items()])


if __name__ == "__main__":
    main()
