"""What every training loader shares: seeded epoch-wise sampling and read-or-skip of images.

The sample at position `pos` of the run depends only on (seed, pos): a resumed run draws the
same images as an uninterrupted one.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from pipeline.data.datasets import Split
from pipeline.data.images import ImageReadError, read_rgb

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_index(seed: int, pos: int, n: int) -> int:
    """Index of the `pos`-th sample drawn: a fresh seeded permutation every n samples."""
    epoch, k = divmod(pos, n)
    return int(_permutation(seed, epoch, n)[k])


def read_or_skip(split: Split, info: dict) -> np.ndarray | None:
    """The image as RGB uint8, or None (with a warning) when it cannot be read."""
    try:
        return read_rgb(split.image_root / info["file_name"])
    except ImageReadError as e:
        log.warning("skipping unreadable training image %s: %s", e.path, e.reason)
        return None
