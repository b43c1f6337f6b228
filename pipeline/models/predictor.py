"""The skeleton every predictor shares (free masks, SOLO, the students).

(info, image) lists in, per image COCO annotations at the image's own size out. Images are
grouped into same-size batches (no padding between them, so an image's result does not
depend on its batch neighbours); a subclass says what the model makes of a batch
(`forward`) and how one image's output becomes annotations (`annotations`).
"""
from __future__ import annotations

from typing import Iterable

import torch

from pipeline.data.transforms import same_size_batches, to_tensor


class BatchPredictor:
    def __init__(self, device, batch_size: int, short_side: int, max_size: int):
        self.device = device
        self.batch_size, self.short_side, self.max_size = batch_size, short_side, max_size

    def forward(self, batch: torch.Tensor, shape) -> Iterable:
        """(B, 3, h, w) float [0, 255] images at `shape` -> one output per image."""
        raise NotImplementedError

    def annotations(self, info: dict, image, shape, out) -> list[dict]:
        """One image's output -> its COCO annotations at the image's own size."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, items):
        results = {}
        for shape, group in same_size_batches(items, self.batch_size, self.short_side,
                                              self.max_size):
            batch = torch.stack([to_tensor(arr, shape) for _, arr in group])
            for (info, arr), out in zip(group, self.forward(batch, shape)):
                results[info["id"]] = self.annotations(info, arr, shape, out)
        return [results[info["id"]] for info, _ in items]
