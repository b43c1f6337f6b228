"""Benchmark: Mask R-CNN training iterations/s with the full-mask loss vs the point loss.

The point loss must cost no more than 10% over the full-mask loss.
    .venv/bin/python bench/train.py [--iters 20] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

from common import config, parse_args, timed


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.data.instances import InstanceBank
    from pipeline.data.points import points_from_masks
    from pipeline.models.backbone import ResNetFeatures
    from pipeline.models.maskrcnn import build_maskrcnn
    from pipeline.models.students import anchors

    torch.set_num_threads(args.threads)
    cfg = config(*overrides)
    mc = cfg.maskrcnn
    split = get_split(cfg.dataset, "train")
    data = points_from_masks(split.coco, 10, seed=0, keep_masks=True)  # masks and points
    cats = sorted(c["id"] for c in data["categories"])
    bank = InstanceBank(split, data, category_map={c: i for i, c in enumerate(cats)})
    rows = {}
    for sup in ("full", "points"):
        torch.manual_seed(0)
        model = build_maskrcnn(ResNetFeatures(cfg.backbone.arch), len(cats), sup,
                               fpn_channels=mc.fpn_channels,
                               mask_head_channels=mc.mask_head_channels,
                               box_head_dim=mc.box_head_dim,
                               box_batch_size_per_image=mc.rois_per_image,
                               rpn_anchor_generator=anchors(mc.anchor_sizes))
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(it):
            samples = bank.batch(it, mc.train.batch_size, 0, mc.train.sizes, mc.train.max_size)
            tg = [{"boxes": s["boxes"], "labels": s["labels"] + 1,
                   "masks": s["masks"].to(torch.uint8), "points": s["points"],
                   "point_labels": s["point_labels"]} for s in samples]
            losses = model([s["image"] / 255 for s in samples], tg)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

        rows[sup] = timed(step, args.iters)
    print(f"Mask R-CNN training benchmark ({cfg.experiment_name}, {cfg.backbone.arch}, "
          f"batch {mc.train.batch_size}, {args.threads} threads, {args.iters} iterations)")
    print("| mask loss | s/iteration | iterations/s |\n|---|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.3f} | {1 / v:.2f} |")
    print(f"\npoint loss / full-mask loss time: {rows['points'] / rows['full']:.3f} "
          f"(target <= 1.10)")


if __name__ == "__main__":
    main()
