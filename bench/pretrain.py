"""Benchmark: DenseCL pretraining, MoCo v2 views per image (torchvision, CPU) vs batched on
the device, and the loader in the training thread vs in worker processes.

    .venv/bin/python bench/pretrain.py [--iters 10] [--threads 2] [--workers 2] [hydra overrides...]
    GPU, the issue's setting: ... bench/pretrain.py hardware=gpu backbone.arch=resnet50 \\
        pretrain.batch_size=256 pretrain.crop_size=224 pretrain.hidden=2048
"""
from __future__ import annotations

import time

from common import config, parse_args, record


def main():
    args, overrides = parse_args()
    import torch
    from omegaconf import open_dict
    from pipeline.__main__ import run_stage

    torch.set_num_threads(args.threads)
    base = config("stage=pretrain", *overrides)
    p = base.pretrain
    rows = []
    for augment, workers in [("per_image", 0), ("batch", 0), ("batch", args.workers)]:
        cfg = config("stage=pretrain", *overrides, f"pretrain.augment={augment}",
                     f"hardware.loader_workers={workers}", "pretrain.overwrite=true",
                     f"pretrain.max_iter={args.iters + 2}", "pretrain.warmup_iter=0",
                     f"pretrain.log_every={args.iters + 2}", "pretrain.ckpt_every=100000",
                     f"pretrain.queue_size={min(int(p.queue_size), 2 * int(p.batch_size))}")
        with open_dict(cfg):
            cfg.run_dir = f"{cfg.run_dir}_pretrain_{augment}_{workers}"
        if cfg.hardware.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_stage(cfg)
        if cfg.hardware.device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        # the loop's own per-iteration figure, from its CSV (start-up excluded)
        import csv
        last = list(csv.DictReader(open(f"{cfg.run_dir}/metrics.csv")))[-1]
        sec = float(last["sec_per_it"])
        rows.append((augment, workers, sec, p.batch_size / sec, wall))
    print(f"DenseCL pretraining benchmark ({base.backbone.arch}, batch {p.batch_size}, "
          f"{p.crop_size} px, {base.hardware.device}, {args.threads} threads, "
          f"{args.iters + 2} iterations incl. start-up)")
    print("| views | loader workers | s/iteration | images/s | wall s |\n|---|---:|---:|---:|---:|")
    for a, w, s, ips, wall in rows:
        print(f"| {a} | {w} | {s:.3f} | {ips:.1f} | {wall:.1f} |")
    record("pretrain", [(f"DenseCL {base.backbone.arch} {p.crop_size} px batch {p.batch_size}, "
                         f"views {a}, {w} workers", f"{ips:.1f} img/s") for a, w, _, ips, _ in rows])


if __name__ == "__main__":
    main()
