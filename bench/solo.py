"""Benchmark: SOLO training iterations/s and inference images/s (CPU sample config).

    .venv/bin/python bench/solo.py [--iters 20] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

from common import config, parse_args, timed


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.data.instances import InstanceBank, pad_batch
    from pipeline.models.backbone import normalize
    from pipeline.models.solo import LossWeights
    from pipeline.sharded import load_images
    from pipeline.stages.solo import SoloPredictor, build_model, _dataclass_from

    torch.set_num_threads(args.threads)
    cfg = config("backbone.weights=null", *overrides)
    s = cfg.solo
    split = get_split(cfg.dataset, "train")
    model = build_model(cfg, torch.device("cpu"))
    bank = InstanceBank(split, split.coco, cache=True)   # GT masks stand in for free masks
    w = _dataclass_from(LossWeights, s.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(it):
        samples = bank.batch(it, s.train.batch_size, 0, s.train.sizes, s.train.max_size)
        images, valid = pad_batch(samples)
        from pipeline.models.solo import solo_loss
        losses = solo_loss(model, model(normalize(images)), samples, images, valid, w, it)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()

    sec_it = timed(step, args.iters)
    val = get_split(cfg.dataset, "val")
    items, _ = load_images(val, val.images)
    pred = SoloPredictor(model, s, torch.device("cpu"))
    sec_batch = timed(lambda i: pred(items), 2, warmup=1)
    print(f"SOLO benchmark ({cfg.experiment_name}, {cfg.backbone.arch}, {args.threads} threads)")
    print("| what | figure |\n|---|---:|")
    print(f"| train iterations/s (batch {s.train.batch_size}, {s.train.sizes[0]} px) | "
          f"{1 / sec_it:.2f} |")
    print(f"| train images/s | {s.train.batch_size / sec_it:.1f} |")
    print(f"| inference images/s ({len(items)} val images, batch {s.inference.batch_size}) | "
          f"{len(items) / sec_batch:.1f} |")


if __name__ == "__main__":
    main()
