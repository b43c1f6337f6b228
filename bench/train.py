"""Benchmark: Mask R-CNN training iterations/s with the full-mask loss vs the point loss, and
with images cached in memory vs read, decoded and augmented per iteration (in the training
thread or in loader workers).

The point loss must cost no more than 10% over the full-mask loss; reading per iteration with
workers no more than 10% over the cache.
    .venv/bin/python bench/train.py [--iters 20] [--threads 2] [--workers 2] [overrides...]
"""
from __future__ import annotations

from common import config, parse_args, record, timed, training_precision


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.data.points import points_from_masks
    from pipeline.models.students import build_student
    from pipeline.stages.student import training

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rows, mixed = {}, None
    plan = [("full", True, 0), ("points", True, 0), ("full", False, 0),
            ("full", False, args.workers)]
    for sup, cache, workers in plan:
        # the stage's own training step under each setting (supervision, cache, workers)
        cfg = config("backbone.weights=null", *overrides, f"supervision={sup}",
                     f"maskrcnn.train.cache_images={cache}",
                     f"hardware.loader_workers={workers}",
                     f"maskrcnn.train.max_iter={args.iters + 2}")
        mc = cfg.maskrcnn
        split = get_split(cfg.dataset, "train")
        data = points_from_masks(split.coco, int(cfg.points_per_instance), seed=0,
                                 keep_masks=True)  # masks and points
        cats = sorted(c["id"] for c in data["categories"])
        mixed = training_precision(cfg, mc.train, dev)
        torch.manual_seed(0)
        student = build_student(cfg, len(cats), "maskrcnn")
        model = student.model.to(dev).train()
        opt, _, step = training(cfg, student, model, split, data,
                                {c: i for i, c in enumerate(cats)}, dev)

        def timed_step(it, step=step, model=model, opt=opt):
            with mixed.autocast():
                losses = step(model, it)
            mixed.step(opt, losses["loss"])

        rows[sup, cache, workers] = timed(timed_step, args.iters, device=dev)
    print(f"Mask R-CNN training benchmark ({cfg.experiment_name}, {cfg.backbone.arch}, "
          f"batch {cfg.maskrcnn.train.batch_size}, {dev}, {args.threads} threads, {args.iters} "
          f"iterations, training in {mixed.name})")
    print("| mask loss | images | loader workers | s/iteration | iterations/s |\n"
          "|---|---|---:|---:|---:|")
    for (sup, cache, workers), v in rows.items():
        print(f"| {sup} | {'cached' if cache else 'read per iteration'} | {workers} | "
              f"{v:.3f} | {1 / v:.2f} |")
    full = rows["full", True, 0]
    print(f"\npoint loss / full-mask loss time: {rows['points', True, 0] / full:.3f} "
          f"(target <= 1.10)")
    print(f"read per iteration / cached: {rows['full', False, 0] / full:.3f} in the training "
          f"thread, {rows['full', False, args.workers] / full:.3f} with {args.workers} loader "
          f"workers (target <= 1.10)")
    record("train", [(f"Mask R-CNN {sup}, {'cached' if c else 'read'}, {w} workers",
                      f"{v:.3f} s/it") for (sup, c, w), v in rows.items()])


if __name__ == "__main__":
    main()
