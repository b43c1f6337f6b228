"""Benchmark: SOLO training iterations/s and inference images/s (CPU sample config).

    .venv/bin/python bench/solo.py [--iters 20] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

from common import config, parse_args, record, timed, training_precision


def main():
    args, overrides = parse_args()
    import torch
    from pipeline.data.datasets import get_split
    from pipeline.models.solo import build_solo
    from pipeline.models.solo_predictor import SoloPredictor
    from pipeline.sharded import load_images
    from pipeline.stages.solo import round_training

    torch.set_num_threads(args.threads)
    cfg = config("backbone.weights=null", *overrides, f"solo.train.max_iter={args.iters + 2}")
    dev = torch.device(args.device)
    s = cfg.solo
    split = get_split(cfg.dataset, "train")
    model = build_solo(cfg, dev)
    mixed = training_precision(cfg, s.train, dev)
    # round 1's own training step; the ground-truth masks stand in for the free masks
    opt, _, _, round_step = round_training(cfg, 1, model, split.coco, split, dev)

    def step(it):
        with mixed.autocast():
            losses = round_step(model, it)
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
