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
    from pipeline.data.instances import InstanceBank
    from pipeline.data.loader import BatchLoader
    from pipeline.data.points import points_from_masks
    from pipeline.models.backbone import ResNetFeatures
    from pipeline.models.maskrcnn import anchors, build_maskrcnn

    torch.set_num_threads(args.threads)
    cfg = config(*overrides)
    dev = torch.device(args.device)
    mc = cfg.maskrcnn
    split = get_split(cfg.dataset, "train")
    data = points_from_masks(split.coco, 10, seed=0, keep_masks=True)  # masks and points
    cats = sorted(c["id"] for c in data["categories"])
    mixed = training_precision(cfg, mc.train, dev)
    rows = {}
    plan = [("full", True, 0), ("points", True, 0), ("full", False, 0),
            ("full", False, args.workers)]
    for sup, cache, workers in plan:
        bank = InstanceBank(split, data, category_map={c: i for i, c in enumerate(cats)},
                            cache=cache)
        batches = BatchLoader(lambda it: bank.batch(it, mc.train.batch_size, 0, mc.train.sizes,
                                                    mc.train.max_size),
                              args.iters + 2, workers)
        torch.manual_seed(0)
        model = build_maskrcnn(ResNetFeatures(cfg.backbone.arch), len(cats), sup,
                               fpn_channels=mc.fpn_channels,
                               mask_head_channels=mc.mask_head_channels,
                               box_head_dim=mc.box_head_dim,
                               box_batch_size_per_image=mc.rois_per_image,
                               rpn_anchor_generator=anchors(mc.anchor_sizes)).to(dev)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(it):
            samples = batches(it)
            tg = [{"boxes": s["boxes"].to(dev), "labels": s["labels"].to(dev) + 1,
                   "masks": s["masks"].to(dev, torch.uint8), "points": s["points"].to(dev),
                   "point_labels": s["point_labels"].to(dev)} for s in samples]
            with mixed.autocast():
                losses = model([s["image"].to(dev) / 255 for s in samples], tg)
            mixed.step(opt, sum(losses.values()))

        rows[sup, cache, workers] = timed(step, args.iters, device=dev)
    print(f"Mask R-CNN training benchmark ({cfg.experiment_name}, {cfg.backbone.arch}, "
          f"batch {mc.train.batch_size}, {dev}, {args.threads} threads, {args.iters} "
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
