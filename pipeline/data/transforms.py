"""Test-time resizing and same-size batching shared by the inference stages."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F


def resized_shape(h: int, w: int, short_side: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge rule: short side to `short_side`, long side capped."""
    if short_side <= 0:
        return h, w
    s = short_side / min(h, w)
    if max_size > 0 and max(h, w) * s > max_size:
        s = max_size / max(h, w)
    return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))


def to_tensor(arr: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> 3xhxw float in [0, 255] at `shape`."""
    t = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1)
    if tuple(t.shape[1:]) != tuple(shape):
        t = F.interpolate(t[None], size=shape, mode="bilinear", align_corners=False,
                          antialias=True)[0]
    return t


def same_size_batches(items: list[tuple[dict, np.ndarray]], batch_size: int, short_side: int,
                      max_size: int):
    """Group images by resized shape and yield (shape, [(info, array), ...]) batches.

    Grouping instead of padding keeps each image's result identical to processing it alone.
    """
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for info, arr in items:
        groups[resized_shape(arr.shape[0], arr.shape[1], short_side, max_size)].append(
            (info, arr))
    for shape in sorted(groups):
        g = groups[shape]
        for i in range(0, len(g), batch_size):
            yield shape, g[i:i + batch_size]
