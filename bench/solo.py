"""Benchmark: SOLO training iterations/s and inference images/s (CPU sample config).

    .venv/bin/python bench/solo.py [--iters 20] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

from common import config, parse_args, record, timed, training_precision


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.data.instances import InstanceBank, pad_batch
    from pipeline.models.backbone import normalize
    from pipeline.models.params import dataclass_from
    from pipeline.models.solo import LossWeights, build_solo, solo_loss
    from pipeline.models.solo_predictor import SoloPredictor
    from pipeline.sharded import load_images

    torch.set_num_threads(args.threads)
    cfg = config("backbone.weights=null", *overrides)
    dev = torch.device(args.device)
    s = cfg.solo
    split = get_split(cfg.dataset, "train")
    model = build_solo(cfg, dev)
    bank = InstanceBank(split, split.coco, cache=True)   # GT masks stand in for free masks
    w = dataclass_from(LossWeights, s.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mixed = training_precision(cfg, s.train, dev)

    def step(it):
        samples = bank.batch(it, s.train.batch_size, 0, s.train.sizes, s.train.max_size)
        images, valid = pad_batch(samples)
        images, valid = images.to(dev), valid.to(dev)
        with mixed.autocast():
            losses = solo_loss(model, model(normalize(images)), samples, images, valid, w, it)
        mixed.step(opt, losses["loss"])

    sec_it = timed(step, args.iters, device=dev)
    val = get_split(cfg.dataset, "val")
    items, _ = load_images(val, val.images)
    pred = SoloPredictor(model, s, dev)
    sec_batch = timed(lambda i: pred(items), 2, warmup=1, device=dev)
    print(f"SOLO benchmark ({cfg.experiment_name}, {cfg.backbone.arch}, {dev}, "
          f"{args.threads} threads, training in {mixed.name})")
    print("| what | figure |\n|---|---:|")
    print(f"| train iterations/s (batch {s.train.batch_size}, {s.train.sizes[0]} px) | "
          f"{1 / sec_it:.2f} |")
    print(f"| train images/s | {s.train.batch_size / sec_it:.1f} |")
    print(f"| inference images/s ({len(items)} val images, batch {s.inference.batch_size}) | "
          f"{len(items) / sec_batch:.1f} |")

    record("solo", [(f"SOLO {cfg.backbone.arch} training, batch {s.train.batch_size}, {mixed.name}",
                     f"{sec_it:.3f} s/it"),
                    (f"SOLO {cfg.backbone.arch} inference", f"{len(items) / sec_batch:.1f} img/s")])


if __name__ == "__main__":
    main()
