"""Benchmark: the cost of Mask Transfiner's refinement at inference.

Mask R-CNN without refinement, with the guided-filter edge snapping
(inference.guided_radius_px) and with `maskrcnn.refine=transfiner`, on the same images at
the same size, one image at a time (the whole path: resize, model, masks at image size);
plus the refiner's quadtree nodes per refined RoI and level. With --weights (a trained
refine=transfiner run's model.pt, and --plain for its Mask R-CNN run's) the nodes are what the
trained incoherence detector selects; untrained weights time an arbitrary tree.
Target on CPU (issue): inference <= 1.5x plain Mask R-CNN.
    .venv/bin/python bench/transfiner.py [--weights RUN/model.pt] [--plain RUN/model.pt]
        [--images 32] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

import argparse

from common import config, parse_args, record


def main():
    args, rest = parse_args()
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--plain", default=None)
    ap.add_argument("--images", type=int, default=32)
    extra, overrides = ap.parse_known_args(rest)
    import time

    import torch
    from pipeline.data.datasets import get_split
    from pipeline.models.students import MaskRCNNStudent, StudentPredictor, inference_speed

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = ["backbone.weights=null", "supervision.agnostic=true", *overrides]
    variants = {"Mask R-CNN": (["maskrcnn.inference.guided_radius_px=0"], extra.plain),
                "Mask R-CNN + guided snapping (8 px)": (["maskrcnn.inference.guided_radius_px=8"],
                                                        extra.plain),
                "Mask R-CNN + Transfiner": (["maskrcnn.refine=transfiner",
                                             "maskrcnn.inference.guided_radius_px=0"],
                                            extra.weights)}
    rows, nodes, refiner_s = {}, [], []
    for name, (more, weights) in variants.items():
        cfg = config(*base, *more)
        torch.manual_seed(0)
        student = MaskRCNNStudent(cfg, 1)
        if weights:
            student.model.load_state_dict(torch.load(weights, map_location="cpu",
                                                     weights_only=True))
        student.model.to(device)
        if hasattr(student.model, "refiner"):
            depth = len(student.model.p.sizes)

            def start(module, inputs):
                refiner_s.append(-time.perf_counter())

            def count(module, inputs, out):
                refiner_s[-1] += time.perf_counter()
                rois = len(inputs[2])
                lv = out["nodes"][:, 1]
                nodes.append((rois, [int((lv == k).sum()) for k in range(depth)]))
            student.model.refiner.register_forward_pre_hook(start)
            student.model.refiner.register_forward_hook(count)
        test = get_split(cfg.dataset, cfg.dataset.report_split)
        speed = inference_speed(StudentPredictor(student, cfg.maskrcnn, device, {1: 1}), test,
                                extra.images, device)
        rows[name] = speed["images_per_s"]
    rois = sum(r for r, _ in nodes)
    per_level = [sum(n[k] for _, n in nodes) / max(rois, 1) for k in range(depth)]
    # the timed images' refiner calls (the first is the warm-up); images without a refined
    # detection count with 0 ms
    timed = refiner_s[1:] if len(refiner_s) > extra.images else refiner_s
    refiner_ms = 1000 * sum(timed) / max(extra.images, 1)
    plain = rows["Mask R-CNN"]
    print(f"Mask Transfiner inference cost ({cfg.experiment_name}, {args.threads} threads, "
          f"{args.device}; {extra.images} {test.name} images one at a time at "
          f"{cfg.maskrcnn.inference.short_side} px; weights: "
          f"{extra.weights or 'untrained'})")
    print("| model | images/s | ms/image | time vs plain |\n|---|---:|---:|---:|")
    for k, ips in rows.items():
        print(f"| {k} | {ips:.2f} | {1000 / ips:.0f} | {plain / ips:.2f}x |")
    sizes = " / ".join(str(s) for s in cfg.maskrcnn.transfiner.sizes)
    print(f"\nquadtree nodes per refined RoI ({sizes}): "
          f"{' / '.join(f'{v:.1f}' for v in per_level)} (total {sum(per_level):.1f}, "
          f"{rois} RoIs, {rois / max(len(nodes), 1):.1f} per image); the refiner itself: "
          f"{refiner_ms:.0f} ms per image")
    record("transfiner", [(k, f"{1000 / v:.0f} ms/image") for k, v in rows.items()]
           + [("nodes per RoI", f"{sum(per_level):.1f}"),
              ("refiner", f"{refiner_ms:.0f} ms/image")])


if __name__ == "__main__":
    main()
