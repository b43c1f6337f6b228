"""Benchmark: Mask Transfiner's incoherence threshold at inference, on trained weights.

`maskrcnn.transfiner.threshold` only acts at inference (training builds the quadtree from the
incoherence targets), but it is part of the weights' fingerprint, so the stage cannot
re-predict a trained run under another value. This predicts the report split with the
weights of a `maskrcnn.refine=transfiner` run under each threshold (the stage's predictor
and the project's COCO evaluator; class-agnostic) and prints mask AP / AP75 / AP^B and the
quadtree nodes per refined RoI.
    .venv/bin/python bench/transfiner_threshold.py --weights RUN/model.pt
        [--thresholds 0.5 0.3 0.1] [hydra overrides...]
"""
from __future__ import annotations

import argparse

from common import config, parse_args


def main():
    args, rest = parse_args()
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3, 0.1])
    extra, overrides = ap.parse_known_args(rest)
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.eval.coco_eval import evaluate
    from pipeline.models.students import MaskRCNNStudent, StudentPredictor
    from pipeline.sharded import load_images

    torch.set_num_threads(args.threads)
    state = torch.load(extra.weights, map_location="cpu", weights_only=True)
    print("| threshold | mask AP | AP75 | AP^B | nodes per refined RoI |\n|---:|---:|---:|---:|---:|")
    for th in extra.thresholds:
        cfg = config("backbone.weights=null", "supervision.agnostic=true",
                     "maskrcnn.refine=transfiner", "maskrcnn.inference.guided_radius_px=0",
                     f"maskrcnn.transfiner.threshold={th}", *overrides)
        student = MaskRCNNStudent(cfg, 1)
        student.model.load_state_dict(state)
        counts = []
        student.model.refiner.register_forward_hook(
            lambda m, inputs, out: counts.append((len(inputs[2]), len(out["nodes"]))))
        split = get_split(cfg.dataset, cfg.dataset.report_split)
        items, _ = load_images(split, sorted(split.images, key=lambda im: im["id"]), 2, False)
        predictor = StudentPredictor(student, cfg.maskrcnn, torch.device("cpu"), {1: 1})
        anns = [a for per in predictor(items) for a in per]
        m = evaluate(split.coco, anns, image_ids=[info["id"] for info, _ in items])
        rois = sum(r for r, _ in counts)
        print(f"| {th} | {m['segm']['AP']:.1f} | {m['segm']['AP75']:.1f} | "
              f"{m['boundary']['AP']:.1f} | {sum(n for _, n in counts) / max(rois, 1):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
