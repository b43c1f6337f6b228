"""The one training loop every stage uses: checkpoint/resume, progress, CSV metrics, AMP, DDP.

The stage supplies `step(model, iteration) -> {name: loss tensor}` with the total under
"loss"; it must draw its batch from the iteration number (seeded), which is what makes a
resumed run continue exactly where the killed one stopped.
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from pipeline import dist
from pipeline.io import save_torch

log = logging.getLogger(__name__)

Step = Callable[[nn.Module, int], dict]


def _trim_csv(path: Path, upto: int) -> None:
    """Drop rows past `upto` (written after the last checkpoint of a killed run)."""
    if not path.is_file():
        return
    with open(path) as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= upto]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(keep)


class _CsvLog:
    def __init__(self, path: Path):
        self.path, self.fields = path, None

    def write(self, row: dict) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if self.fields is None:
            if not new:
                with open(self.path) as f:
                    self.fields = next(csv.reader(f))
            else:
                self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(str(out_dir / "tb"))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, step: Step, out_dir,
          max_iter: int, ckpt_every: int = 100, log_every: int = 10,
          scheduler=None, amp: bool = False, grad_clip: float = 0.0,
          progress: bool = True, desc: str = "train", seed: int | None = None) -> nn.Module:
    """Run iterations [start, max_iter) where start comes from `out_dir/last.pt` if present.

    seed: the global RNG is reseeded from (seed, iteration, rank) before every step, so
    randomness inside the model (Mask R-CNN's proposal and RoI sampling) is the same after a
    resume as in an uninterrupted run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    device = next(model.parameters()).device
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    if last.is_file():
        ck = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler"):
            scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck.get("scaler", {}))
        start = int(ck["iteration"])
        log.info("resumed from %s at iteration %d", last, start)
    csv_path = out_dir / "metrics.csv"
    if dist.is_main():
        _trim_csv(csv_path, start)
    csv_log = _CsvLog(csv_path)
    tb = _tensorboard(out_dir) if dist.is_main() else None

    wrapped = model
    if dist.world_size() > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)

    def checkpoint(iteration: int) -> None:
        if dist.is_main():
            save_torch(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict() if scheduler else None,
                              "scaler": scaler.state_dict(), "iteration": iteration})

    model.train()
    bar = tqdm(total=max_iter, initial=start, desc=desc, unit="it",
               disable=not (progress and dist.is_main()))
    t0 = time.perf_counter()
    for it in range(start, max_iter):
        if seed is not None:
            torch.manual_seed((seed * 1_000_003 + it) * 64 + dist.rank())
        with torch.autocast(device.type, enabled=use_amp):
            losses = step(wrapped, it)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at iteration {it}; "
                                     f"lower the learning rate or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        done = it + 1
        if done % log_every == 0 or done == max_iter:
            row = {"iteration": done, **{k: round(float(v.detach()), 5) for k, v in losses.items()},
                   "lr": optimizer.param_groups[0]["lr"],
                   "sec_per_it": round((time.perf_counter() - t0) / (done - start), 4)}
            if dist.is_main():
                csv_log.write(row)
                if tb is not None:
                    for k, v in row.items():
                        if k != "iteration":
                            tb.add_scalar(f"{desc}/{k}", v, done)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
        if done % ckpt_every == 0 or done == max_iter:
            checkpoint(done)
    bar.close()
    dist.broadcast_state(model)  # all ranks go on with the weights rank 0 saved
    if start >= max_iter:
        log.info("%s already finished (%d iterations) in %s", desc, max_iter, out_dir)
    return model


SCHEDULES = ("constant", "steps", "cosine")


def lr_schedule(optimizer, schedule: str, max_iter: int, warmup: int = 0,
                steps=(2 / 3, 8 / 9), gamma: float = 0.1, warmup_factor: float = 0.001):
    """Linear warm-up, then `constant` (FreeSOLO's self-supervised SOLO), `steps` (x gamma at
    the given fractions of the schedule: detectron2's 1x, 60k and 80k of 90k) or `cosine`."""
    import math
    if schedule not in SCHEDULES:
        from pipeline.errors import UserError
        raise UserError(f"train.schedule={schedule!r} unknown; use one of {', '.join(SCHEDULES)}")
    marks = [round(f * max_iter) for f in steps]

    def f(it):
        if it < warmup:
            return warmup_factor + (1 - warmup_factor) * it / max(1, warmup)
        if schedule == "constant":
            return 1.0
        if schedule == "steps":
            return gamma ** sum(it >= m for m in marks)
        return 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, max_iter - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
