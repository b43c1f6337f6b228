"""Benchmark: how good are the pseudo-labels a chooser hands on, without and with a few points.

The pseudo-label sources `make pseudo-labels` made for a dataset (choose.sources: free masks,
SOLO's rounds, each baseline, on the training images) are picked from three ways:
- no ground truth (stage=choose, pipeline/choose.py: the source the other methods agree with);
- with points on K images (K = 2, 5, 10): the first K images of a random order are annotated
  by the simulated annotator (the ground truth's box + N points per instance, PointSup's
  sampling, pipeline/data/points.py), the sources are ranked by their mask AP on those K
  images estimated from the points alone, false positives counted (annotation/point_ap.py,
  annotation/source_scores.py: what `make annotate-sync` does), the best one pre-annotates
  the rest; repeated over `--draws` random orders;
- the best source by ground truth on those images (what a chooser can at most reach).
Each is scored by the mask AP of the picked source on the un-annotated images (ground truth
used only to score). Runs on the files already made; nothing is trained.
    .venv/bin/python bench/chooser.py [--draws 5] [dataset=coins] [hydra overrides...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=5, help="random annotation orders per K")
    ap.add_argument("--ks", default="2,5,10", help="annotated images")
    args, overrides = ap.parse_known_args()
    import numpy as np
    from hydra import compose, initialize_config_dir

    from annotation.point_ap import point_ap
    from annotation.source_scores import rank_sources
    from pipeline import choose
    from pipeline.data.coco import load_coco, scored_at_least, subset_images
    from pipeline.data.datasets import get_split
    from pipeline.data.points import points_from_masks
    from pipeline.eval.coco_eval import evaluate

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.data_dir={ROOT / 'data'}",
                                           f"paths.output_dir={ROOT / 'outputs'}", *overrides])
    c = cfg.choose
    found = {n: Path(p) for n, p in c.sources.items() if Path(p).is_file()}
    if not found:
        raise SystemExit(f"no source of choose.sources in {cfg.paths.work_dir}: run "
                         f"make pseudo-labels ARGS='dataset={cfg.dataset.name}' first")
    split = get_split(cfg.dataset, c.split)
    low = dict(c.get("min_score") or {})        # as stage=choose weighs them
    loaded = {n: scored_at_least(load_coco(p), float(low.get(n, 0.0))) for n, p in found.items()}
    aligned = choose.align({"ground truth": split.coco, **loaded})   # ids of the split
    gt = dict(split.coco, images=aligned["ground truth"]["images"])
    sources = {n: aligned[n] for n in loaded}
    families = dict(c.get("families") or {})
    no_gt = choose.choose(sources, families)["winner"]
    ids = [im["id"] for im in gt["images"]]

    def ap(name, image_ids):
        return evaluate(gt, sources[name]["annotations"], iou_types=("segm",),
                        image_ids=image_ids)["segm"]["AP"]

    everywhere = {n: ap(n, ids) for n in sources}
    points = points_from_masks(gt, n=int(cfg.points_per_instance), seed=0)
    print(f"\n{cfg.dataset.name}, split {c.split} ({len(ids)} images); mask AP of each source "
          f"on all of them, and as estimated from {cfg.points_per_instance} points per instance "
          f"(annotation/point_ap.py):\n")
    print("| source | mask AP | from the points |\n|---|---:|---:|")
    for n, v in everywhere.items():
        mark = " (no-ground-truth pick)" if n == no_gt else ""
        print(f"| {n}{mark} | {v:.1f} | {point_ap(points, sources[n])['ap']:.1f} |")
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        if k >= len(ids):
            continue
        got = {"points": [], "no_gt": [], "best": []}
        picks = []
        for draw in range(args.draws):
            order = np.random.default_rng(draw).permutation(ids).tolist()
            seen, rest = order[:k], order[k:]
            ranked = rank_sources(subset_images(points, seen), sources)
            pick = ranked[0]["source"]
            picks.append(pick)
            on_rest = {n: ap(n, rest) for n in sources}
            got["points"].append(on_rest[pick])
            got["no_gt"].append(on_rest[no_gt])
            got["best"].append(max(on_rest.values()))
        counts = ", ".join(f"{n} x{picks.count(n)}" for n in dict.fromkeys(picks))
        rows.append((k, counts, *(float(np.mean(got[x])) for x in ("points", "no_gt", "best"))))
    print(f"\nmask AP on the un-annotated images, mean of {args.draws} random annotation orders"
          f" ({cfg.points_per_instance} points per instance on the K annotated images):\n")
    print("| K images with points | points chooser's picks | its AP | no-ground-truth pick "
          f"({no_gt}) | best source |\n|---:|---|---:|---:|---:|")
    for k, counts, p, n, b in rows:
        print(f"| {k} | {counts} | {p:.1f} | {n:.1f} | {b:.1f} |")
    print(f"\ncommand: python bench/chooser.py --draws {args.draws} {' '.join(overrides)}")


if __name__ == "__main__":
    main()
