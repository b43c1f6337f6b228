"""Benchmark: COCO-size bookkeeping, no pixels. Does every step grow linearly?

At a fraction f of COCO (train: 118,287 images, ~7.3 instances each, half polygons and half
RLE; val: 5,000 images with 100 predicted RLE masks each), times: writing and loading the
annotation file, InstanceBank indexing, PointSup point sampling (10 per instance: each mask
decoded), a free-mask file of 20 masks per train image written and read back, and COCO mask
evaluation of the predictions. Each fraction runs in its own process, so its peak RSS is its
own. Target: linear growth, each step < 2 min and < 8 GB peak RSS at full size.
    .venv/bin/python bench/scale.py [--fractions 0.1 0.5 1.0]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import ROOT

TRAIN_IMAGES, VAL_IMAGES, PER_IMAGE, PREDICTIONS, FREE_MASKS = 118_287, 5_000, 7.3, 100, 20
H, W = 480, 640


def polygon(rng, cx, cy, r, k=8):
    import numpy as np
    a = np.sort(rng.uniform(0, 2 * np.pi, k))
    rr = r * rng.uniform(0.6, 1.0, k)
    xs = np.clip(cx + rr * np.cos(a), 0, W - 1)
    ys = np.clip(cy + rr * np.sin(a), 0, H - 1)
    return [float(v) for xy in zip(xs, ys) for v in xy]


def rle_of(poly):
    from pycocotools import mask as mu
    rle = mu.merge(mu.frPyObjects([poly], H, W))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def annotations(rng, image_ids, per_image, start_id=1, score=False):
    """Random octagons; every other one stored as RLE (as COCO mixes both)."""
    anns, k = [], start_id
    for i in image_ids:
        n = rng.poisson(per_image) if not score else per_image
        for _ in range(n):
            cx, cy, r = rng.uniform(40, W - 40), rng.uniform(40, H - 40), rng.uniform(8, 120)
            poly = polygon(rng, cx, cy, r)
            xs, ys = poly[0::2], poly[1::2]
            a = {"id": k, "image_id": i, "category_id": int(rng.integers(1, 81)),
                 "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                 "iscrowd": 0}
            a["segmentation"] = rle_of(poly) if (k % 2 or score) else [poly]
            a["area"] = a["bbox"][2] * a["bbox"][3] * 0.7
            if score:
                a["score"] = float(rng.random())
            anns.append(a)
            k += 1
    return anns


@contextmanager
def timed(times: dict, name: str):
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start


def one_fraction(f: float) -> dict:
    import numpy as np
    from pipeline.data.coco import load_coco, save_coco
    from pipeline.data.datasets import Split
    from pipeline.data.instances import InstanceBank
    from pipeline.data.points import points_from_masks
    from pipeline.eval.coco_eval import evaluate

    rng = np.random.default_rng(0)
    n_train, n_val = int(TRAIN_IMAGES * f), int(VAL_IMAGES * f)
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 81)]
    out, t = {"fraction": f, "train_images": n_train, "val_images": n_val}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W}
                  for i in range(1, n_train + 1)]
        train = {"images": images, "annotations": annotations(rng, range(1, n_train + 1),
                                                               PER_IMAGE), "categories": cats}
        out["train_instances"] = len(train["annotations"])
        with timed(t, "write annotations"):
            save_coco(tmp / "train.json", train)
        del train
        with timed(t, "load annotations"):
            train = load_coco(tmp / "train.json")
        with timed(t, "InstanceBank index"):
            bank = InstanceBank(Split("train", tmp, train, True), train,
                                category_map={c["id"]: c["id"] - 1 for c in cats}, cache=False)
        assert len(bank) > 0.99 * n_train * (1 - np.exp(-PER_IMAGE))
        with timed(t, "point sampling (10 / instance)"):
            points_from_masks(train, n=10, seed=0)
        del bank, train
        free = {"images": images, "categories": [{"id": 1, "name": "object"}],
                "annotations": [dict(a, category_id=1) for a in annotations(
                    rng, range(1, n_train + 1), FREE_MASKS, score=True)]}
        out["free_masks"] = len(free["annotations"])
        with timed(t, "free masks write (20 / image)"):
            save_coco(tmp / "free_masks.json", free)
        del free
        with timed(t, "free masks read"):
            load_coco(tmp / "free_masks.json")
        val_ids = range(1, n_val + 1)
        val = {"images": images[:n_val], "annotations": annotations(rng, val_ids, PER_IMAGE),
               "categories": cats}
        preds = annotations(rng, val_ids, PREDICTIONS, start_id=10 ** 9, score=True)
        out["predictions"] = len(preds)
        with timed(t, "evaluation (segm, 100 / image)"):
            evaluate(val, preds, iou_types=("segm",), agnostic=True)
    out["seconds"] = {k: round(v, 1) for k, v in t.items()}
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one_fraction(a.one)))
        return
    rows = []
    for f in a.fractions:   # one process per fraction: its own peak RSS
        r = subprocess.run([sys.executable, __file__, "--one", str(f)], capture_output=True,
                           text=True)
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            raise SystemExit(r.returncode)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    steps = list(rows[0]["seconds"])
    print("\n| step | " + " | ".join(f"{r['fraction']:.0%} (s)" for r in rows)
          + " | growth per unit size, last / first |")
    print("|---|" + "---:|" * (len(rows) + 1))
    for k in steps:
        first, last = rows[0], rows[-1]
        g = (last["seconds"][k] / last["fraction"]) / max(first["seconds"][k] / first["fraction"],
                                                          1e-9)
        print(f"| {k} | " + " | ".join(str(r["seconds"][k]) for r in rows) + f" | {g:.2f} |")
    print("| peak RSS (GB) | " + " | ".join(str(r["peak_rss_gb"]) for r in rows) + " | |")
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
