"""Training batches made ahead of the step, in DataLoader worker processes.

Every trainer draws its batch from the iteration number alone (`make(it)` is seeded from
`it`), so the batch of iteration `it` is the same whether it was made in this process or in
a worker, before or after a resume. The loader only moves that work off the training
thread: reading, decoding, resizing and augmenting overlap with the model's step.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset


class _ByIteration(Dataset):
    def __init__(self, make: Callable[[int], Any]):
        self.make = make

    def __getitem__(self, it: int):
        return it, self.make(it)


def _as_is(item):
    return item


class BatchLoader:
    """`loader(it)` returns `make(it)`; with workers > 0 the next `prefetch` batches per worker
    are made in other processes while this one trains.

    `make` may use the global torch RNG (torchvision's random transforms do): it runs under a
    forked RNG state here and in a fresh process there, so the trainer's own RNG stream is the
    same with and without workers."""

    def __init__(self, make: Callable[[int], Any], max_iter: int, workers: int = 0,
                 prefetch: int = 2):
        self.make, self.max_iter = make, int(max_iter)
        self.workers, self.prefetch = max(0, int(workers)), max(1, int(prefetch))
        self._batches, self._next = None, None

    def __call__(self, it: int):
        if self.workers == 0:
            with torch.random.fork_rng(devices=[]):
                return self.make(it)
        if self._batches is None or it != self._next:  # first call, or a jump: start there
            self.close()
            self._batches = iter(DataLoader(
                _ByIteration(self.make), sampler=range(it, self.max_iter), batch_size=None,
                num_workers=self.workers, prefetch_factor=self.prefetch,
                collate_fn=_as_is, persistent_workers=False,
                generator=torch.Generator().manual_seed(0)))  # not the trainer's RNG
        got, batch = next(self._batches)
        if got != it:  # cannot happen with an in-order sampler; refuse rather than mistrain
            raise RuntimeError(f"batch loader returned iteration {got} for {it}")
        self._next = it + 1
        return batch

    def close(self) -> None:
        self._batches = None  # the DataLoader iterator shuts its workers down when dropped
