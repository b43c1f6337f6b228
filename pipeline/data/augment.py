"""Image batches for training: seeded, resumable sampling and MoCo v2 style augmentation."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torchvision.transforms import v2 as T

from pipeline.data.datasets import Split
from pipeline.data.sampling import epoch_index, read_or_skip
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def moco_v2_augment(size: int, scale=(0.2, 1.0)) -> T.Compose:
    """MoCo v2's view augmentation (Chen et al. 2020), as DenseCL uses it."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(kernel_size=max(3, size // 10 * 2 + 1),
                                      sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
    ])


class ImageBank:
    """The images of a split, read on demand (optionally cached), unreadable ones skipped."""

    def __init__(self, split: Split, cache: bool = True, max_side: int = 0, workers: int = 4):
        self.split, self.cache, self.max_side = split, cache, max_side
        self.infos = sorted(split.images, key=lambda im: im["id"])
        if not self.infos:
            raise UserError(f"split {split.name!r} has no images to train on")
        self._store: dict[int, torch.Tensor | None] = {}
        self.workers, self._pool = max(1, workers), (None, 0)

    def __len__(self) -> int:
        return len(self.infos)

    def _read(self, i: int) -> torch.Tensor | None:
        if i in self._store:
            return self._store[i]
        arr = read_or_skip(self.split, self.infos[i])
        if arr is None:
            self._store[i] = None
            return None
        t = torch.from_numpy(np.array(arr)).permute(2, 0, 1)
        if self.max_side and max(t.shape[1:]) > self.max_side:
            s = self.max_side / max(t.shape[1:])
            t = T.functional.resize(t, [round(t.shape[1] * s), round(t.shape[2] * s)],
                                    antialias=True)
        if self.cache:
            self._store[i] = t
        return t

    def batch_indices(self, it: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        """Indices for iteration `it`: epoch-wise permutations drawn from (seed, epoch)."""
        start = (it * world + rank) * batch
        return [epoch_index(seed, pos, len(self)) for pos in range(start, start + batch)]

    def get(self, indices) -> list[torch.Tensor]:
        pool, pid = self._pool
        if pid != os.getpid():  # threads do not survive a fork into a loader worker
            pool = ThreadPoolExecutor(self.workers)
            self._pool = pool, os.getpid()
        imgs = list(pool.map(self._read, indices))
        good = [t for t in imgs if t is not None]
        if not good:
            raise UserError(f"none of the images {indices} of split {self.split.name!r} could "
                            f"be read; see the warnings above")
        while len(good) < len(imgs):  # keep the batch size when some images are unreadable
            good.append(good[len(good) % max(1, len(good))])
        return good
