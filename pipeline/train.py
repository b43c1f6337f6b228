"""The one training loop every stage uses: checkpoint/resume, progress, CSV metrics, AMP, DDP.

The stage supplies `step(model, iteration) -> {name: loss tensor}` with the total under
"loss"; it must draw its batch from the iteration number (seeded), which is what makes a
resumed run continue exactly where the killed one stopped.
"""
from __future__ import annotations

import csv
import functools
import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from pipeline import dist
from pipeline.errors import UserError
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


@functools.cache  # the CPU does not change while the process runs
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): elsewhere oneDNN
    emulates it, or ATen falls back to slow kernels."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: do not guess
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast_dtype(amp, device_type: str) -> torch.dtype | None:
    """The reduced precision a training step runs in (hardware.amp), None for float32:
    float16 with loss scaling on CUDA, bfloat16 on a CPU (same range as float32: no loss
    scaling). amp="auto": CUDA, or a CPU with native bfloat16."""
    if not amp:  # False or None (config checks admit True, False, "auto")
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type != "cpu" or (amp == "auto" and not cpu_has_native_bf16()):
        return None
    return torch.bfloat16


class MixedPrecision:
    """One training step's precision (hardware.amp, see autocast_dtype): the autocast
    context the forward pass runs in, and the backward and optimizer step, with loss
    scaling where the reduced precision is float16. Shared by the training loop and the
    benchmarks, so both time and train the same step."""

    def __init__(self, amp, device_type: str):
        self.device_type = device_type
        self.dtype = autocast_dtype(amp, device_type)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, optimizer, loss, params=None, grad_clip: float = 0.0) -> bool:
        """Backward and optimizer step; False (the weights untouched) when a gradient is not
        finite. Under float16 the loss scaler makes that call itself (it skips the step and
        lowers the scale); elsewhere the gradients' norm decides."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            if grad_clip > 0:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            return True
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        params = [p for p in params if p.grad is not None]
        norm = nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0 \
            else nn.utils.get_total_norm([p.grad for p in params])
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        return True


def stage_amp(cfg, node):
    """A stage's reduced-precision setting: its own `amp` where set, else hardware.amp."""
    own = node.get("amp") if node is not None else None
    return cfg.hardware.get("amp", False) if own is None else own


def precision(cfg, node=None) -> tuple:
    """The training precision, for the fingerprints of trained weights (it changes them):
    () for float32, so that float32 weights keep the fingerprints they had before."""
    mixed = MixedPrecision(stage_amp(cfg, node), str(cfg.hardware.device).split(":")[0])
    return () if mixed.dtype is None else (mixed.name,)


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (Polyak averaging, as in
    Mean Teacher, Tarvainen & Valpola 2017, Sec. 2): the average of the last ~1/(1-decay)
    iterates, less tied to where a short, noisy schedule happens to stop. The decay ramps up
    as min(decay, (1+t)/(10+t)) so that early iterates, far from the end, fade quickly."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: nn.Module, iteration: int) -> None:
        d = min(self.decay, (1 + iteration) / (10 + iteration))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    self.state[k].lerp_(v.detach(), 1 - d)
                else:  # counters such as BN's num_batches_tracked
                    self.state[k].copy_(v)


class Loop:
    """What the hooks see of a running training: the model (unwrapped), optimizer, scheduler,
    run folder, the first iteration of this run (`start`, after a resume), `max_iter`, and
    after each step `iter` (iterations done) and `losses` (the step's dict)."""

    def __init__(self, model, optimizer, scheduler, out_dir: Path, max_iter: int, desc: str):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.out_dir, self.max_iter, self.desc = out_dir, max_iter, desc
        self.start = self.iter = 0
        self.losses: dict = {}


class Hook:
    """One concern of the training loop (detectron2's HookBase shape): called before
    training (after a resume has set loop.start), after every step, and after training.
    A hook with a `key` keeps `state_dict()` in the loop's checkpoints under that key."""
    key: str | None = None

    def before_train(self, loop: Loop) -> None: ...

    def after_step(self, loop: Loop) -> None: ...

    def after_train(self, loop: Loop) -> None: ...

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None: ...


class AverageWeights(Hook):
    """The returned model holds the moving average of its weights (WeightAverage); the
    average is checkpointed with the weights, so a resume keeps it."""
    key = "ema"

    def __init__(self, model: nn.Module, decay: float):
        self.average = WeightAverage(model, decay)

    def after_step(self, loop):
        self.average.update(loop.model, loop.iter - 1)

    def after_train(self, loop):
        loop.model.load_state_dict(self.average.state)

    def state_dict(self):
        return self.average.state

    def load_state_dict(self, state):
        self.average.state = state


class KeepWeights(Hook):
    """At the given iterations rank 0 also keeps the weights that would predict (the moving
    average where one is kept) as `ckpt_{iteration:07d}.pt`: last.pt is overwritten, these
    are not (a convergence curve from one run: bench/convergence.py)."""

    def __init__(self, iterations, average: AverageWeights | None = None):
        self.iterations, self.average = {int(i) for i in iterations}, average

    def after_step(self, loop):
        if loop.iter in self.iterations and dist.is_main():
            save_torch(loop.out_dir / f"ckpt_{loop.iter:07d}.pt",
                       self.average.average.state if self.average is not None
                       else loop.model.state_dict())


class MetricsLog(Hook):
    """Every `every` iterations and at the end, rank 0 appends the step's losses, the learning
    rate and s/iteration to metrics.csv (rows past a resumed checkpoint are dropped first)
    and to TensorBoard when it is installed."""

    def __init__(self, every: int):
        self.every = every

    def before_train(self, loop):
        self.csv_path = loop.out_dir / "metrics.csv"
        if dist.is_main():
            _trim_csv(self.csv_path, loop.start)
        self.csv = _CsvLog(self.csv_path)
        self.tb = _tensorboard(loop.out_dir) if dist.is_main() else None
        self.t0 = time.perf_counter()

    def after_step(self, loop):
        done = loop.iter
        if done % self.every and done != loop.max_iter:
            return
        row = {"iteration": done,
               **{k: round(float(v.detach()), 5) for k, v in loop.losses.items()},
               "lr": loop.optimizer.param_groups[0]["lr"],
               "sec_per_it": round((time.perf_counter() - self.t0) / (done - loop.start), 4)}
        if dist.is_main():
            self.csv.write(row)
            if self.tb is not None:
                for k, v in row.items():
                    if k != "iteration":
                        self.tb.add_scalar(f"{loop.desc}/{k}", v, done)


class Progress(Hook):
    """A tqdm bar on rank 0 with the loss at each logged step."""

    def __init__(self, enabled: bool, every: int):
        self.enabled, self.every = enabled, every

    def before_train(self, loop):
        self.bar = tqdm(total=loop.max_iter, initial=loop.start, desc=loop.desc, unit="it",
                        disable=not (self.enabled and dist.is_main()))

    def after_step(self, loop):
        if loop.iter % self.every == 0 or loop.iter == loop.max_iter:
            self.bar.set_postfix(loss=f"{loop.losses['loss'].item():.3f}")
        self.bar.update(1)

    def after_train(self, loop):
        self.bar.close()


class Checkpoint(Hook):
    """Every `every` iterations and at the end, rank 0 writes last.pt (atomic): weights,
    optimizer, scheduler, loss scaler, iterations done and every keyed hook's state; what
    `resume` reads back."""

    def __init__(self, every: int, scaler, hooks: list[Hook]):
        self.every, self.scaler, self.hooks = every, scaler, hooks

    def after_step(self, loop):
        if loop.iter % self.every == 0 or loop.iter == loop.max_iter:
            self.save(loop)

    def save(self, loop):
        if not dist.is_main():
            return
        state = {"model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
                 "scheduler": loop.scheduler.state_dict() if loop.scheduler else None,
                 "scaler": self.scaler.state_dict(), "iteration": loop.iter}
        state.update({h.key: h.state_dict() for h in self.hooks if h.key})
        save_torch(loop.out_dir / "last.pt", state)

    def resume(self, loop, device) -> int:
        """The iteration to start from: last.pt's, with everything it holds restored."""
        last = loop.out_dir / "last.pt"
        if not last.is_file():
            return 0
        ck = torch.load(last, map_location=device, weights_only=False)
        loop.model.load_state_dict(ck["model"])
        loop.optimizer.load_state_dict(ck["optimizer"])
        if loop.scheduler is not None and ck.get("scheduler"):
            loop.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck.get("scaler", {}))
        for h in self.hooks:
            if h.key:
                if ck.get(h.key) is None:
                    raise UserError(f"{last} was written without the state of '{h.key}' "
                                    f"(on now): delete {loop.out_dir} to train again")
                h.load_state_dict(ck[h.key])
        log.info("resumed from %s at iteration %d", last, int(ck["iteration"]))
        return int(ck["iteration"])


def train(model: nn.Module, optimizer: torch.optim.Optimizer, step: Step, out_dir,
          max_iter: int, ckpt_every: int = 100, log_every: int = 10,
          scheduler=None, amp: bool = False, grad_clip: float = 0.0,
          progress: bool = True, desc: str = "train", seed: int | None = None,
          ema: float = 0.0, max_bad_steps: int = 10, keep=(),
          hooks: tuple[Hook, ...] = ()) -> nn.Module:
    """Run iterations [start, max_iter) where start comes from `out_dir/last.pt` if present.

    seed: the global RNG is reseeded from (seed, iteration, rank) before every step, so
    randomness inside the model (Mask R-CNN's proposal and RoI sampling) is the same after a
    resume as in an uninterrupted run.
    amp: hardware.amp (True, False or "auto"; see autocast_dtype).
    ema: > 0: the returned model holds the moving average of its weights with this decay
    (the AverageWeights hook).
    max_bad_steps: a step whose loss or gradient is not finite (a batch of sparse, tiny or
    noisy targets can make one) is skipped, the weights untouched; that many in a row stop
    the run with one line saying why (UserError), never with NaN weights.
    keep: iterations whose weights are also kept (the KeepWeights hook).
    hooks: more concerns, run after the weight average, metrics log and progress and before
    the checkpoint, e.g. an evaluation every k iterations."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    mixed = MixedPrecision(amp, device.type)
    loop = Loop(model, optimizer, scheduler, out_dir, max_iter, desc)
    keyed = [AverageWeights(model, ema)] if ema > 0 else []
    checkpoint = Checkpoint(ckpt_every, mixed.scaler, keyed + list(hooks))
    # the checkpoint last: it keeps each keyed hook's state as of the iteration it saves
    kept = [KeepWeights(keep, keyed[0] if keyed else None)] if keep else []
    hooks = [*keyed, MetricsLog(log_every), Progress(progress, log_every), *kept, *hooks,
             checkpoint]
    loop.start = loop.iter = checkpoint.resume(loop, device)
    for h in hooks:
        h.before_train(loop)

    wrapped = model
    if dist.world_size() > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)

    model.train()
    bad = skipped = 0  # non-finite steps: in a row, in all
    for it in range(loop.start, max_iter):
        if seed is not None:
            torch.manual_seed((seed * 1_000_003 + it) * 64 + dist.rank())
        with mixed.autocast():
            losses = step(wrapped, it)
        loss = losses["loss"]
        finite = bool(torch.isfinite(loss))
        # under DDP every rank joins the gradients' all-reduce: a rank's non-finite loss
        # makes everyone's gradient non-finite, and every rank skips the same step
        applied = (mixed.step(optimizer, loss, model.parameters(), grad_clip) and finite) \
            if finite or dist.world_size() > 1 else False
        if applied:
            bad = 0
        else:
            bad, skipped = bad + 1, skipped + 1
            what = f"loss {loss.item()}" if not finite else "a gradient not finite"
            if bad >= max_bad_steps:
                raise UserError(f"{desc}: {what} at iteration {it}, {bad} iterations in a "
                                f"row; training stopped. Lower the stage's train.lr, set its "
                                f"train.grad_clip, or check the training targets")
            log.warning("%s: iteration %d skipped (%s); the weights are unchanged", desc, it,
                        what)
        if scheduler is not None:
            scheduler.step()
        loop.iter, loop.losses = it + 1, losses
        for h in hooks:
            h.after_step(loop)
    for h in hooks:
        h.after_train(loop)
    if skipped:
        log.warning("%s: %d of %d iterations skipped (loss or gradient not finite)", desc,
                    skipped, max_iter - loop.start)
    dist.broadcast_state(model)  # all ranks go on with the weights rank 0 saved
    if loop.start >= max_iter:
        log.info("%s already finished (%d iterations) in %s", desc, max_iter, out_dir)
    return model


SCHEDULES = ("constant", "steps", "cosine")


def lr_schedule(optimizer, schedule: str, max_iter: int, warmup: int = 0,
                steps=(2 / 3, 8 / 9), gamma: float = 0.1, warmup_factor: float = 0.001):
    """Linear warm-up, then `constant` (FreeSOLO's self-supervised SOLO), `steps` (x gamma at
    the given fractions of the schedule: detectron2's 1x, 60k and 80k of 90k) or `cosine`."""
    import math
    if schedule not in SCHEDULES:
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
