"""Benchmark: the students (SparseInst, AdaMixer) against Mask R-CNN on the same images at
the same input size.

Inference images/s (the whole path: resize, model, masks at image size, one image at a
time) and training s/iteration (full masks, in the stage's training precision), every model
built from the same config and backbone. Target on CPU: SparseInst's inference faster than
Mask R-CNN's. `make gpu-check` runs it on the GPU with ResNet-50 (`--device cuda
backbone.arch=resnet50`) and keeps each model's two figures.
    .venv/bin/python bench/sparseinst.py [--iters 10] [--threads 2] [--device cpu|cuda]
                                         [hydra overrides...]
"""
from __future__ import annotations

from common import config, parse_args, record, timed, training_precision


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.data.instances import InstanceBank
    from pipeline.models.students import MODELS, StudentPredictor, build_student, inference_speed

    torch.set_num_threads(args.threads)
    cfg = config("backbone.weights=null", "supervision.agnostic=true", *overrides)
    split = get_split(cfg.dataset, "train")
    test = get_split(cfg.dataset, cfg.dataset.report_split)
    bank = InstanceBank(split, split.coco, category_map={c["id"]: 0 for c in
                                                          split.coco["categories"]})
    device = torch.device(args.device)
    rows, mixed = {}, None
    for name in MODELS:
        torch.manual_seed(0)
        # untrained weights: a score threshold of 0 keeps every candidate, so the
        # post-processing of a full output (every query / 100 detections) is timed
        mcfg = config("backbone.weights=null", "supervision.agnostic=true", *overrides,
                      f"{name}.inference.score_threshold=0.0")
        node = mcfg[name]
        student = build_student(mcfg, 1, name)
        model = student.model.to(device)
        params = sum(p.numel() for p in model.parameters())
        model.train()
        opt = student.optimizer(node.train, model.parameters())
        mixed = training_precision(mcfg, node.train, device)

        def step(it):
            samples = bank.batch(it, node.train.batch_size, 0, node.train.sizes,
                                 node.train.max_size)
            with mixed.autocast():
                loss = student.losses(model, samples, device)["loss"]
            mixed.step(opt, loss, grad_clip=float(node.train.get("grad_clip", 0.0)))

        s_it = timed(step, args.iters, device=device)
        speed = inference_speed(StudentPredictor(student, node, device, {1: 1}), test, 32,
                                device)
        rows[name] = (s_it, speed["images_per_s"], params)
    size = cfg.sparseinst.inference.short_side
    print(f"Student models ({cfg.experiment_name}, {cfg.backbone.arch}, {device}, "
          f"{args.threads} threads; training in {mixed.name}, "
          f"training batch {cfg.maskrcnn.train.batch_size} at {list(cfg.maskrcnn.train.sizes)} "
          f"px, {args.iters} iterations; inference one image at a time at {size} px, "
          f"32 {test.name} images)")
    print("| model | training s/iteration | inference images/s | parameters |\n|---|---:|---:|---:|")
    for k, (s_it, ips, n) in rows.items():
        print(f"| {MODELS[k]} | {s_it:.3f} | {ips:.1f} | {n / 1e6:.1f} M |")
    ratio = rows["sparseinst"][1] / rows["maskrcnn"][1]
    print(f"\nSparseInst / Mask R-CNN inference speed: {ratio:.2f}x (target > 1)")
    record("students", [row for k, (s_it, ips, _) in rows.items() for row in (
        (f"{MODELS[k]} {cfg.backbone.arch} training, batch "
         f"{cfg[k].train.batch_size}", f"{s_it:.3f} s/it"),
        (f"{MODELS[k]} {cfg.backbone.arch} inference", f"{ips:.1f} images/s"))])


if __name__ == "__main__":
    main()
