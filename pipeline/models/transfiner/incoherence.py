"""Incoherent regions (Mask Transfiner, Sec. 3.1) and their detector (Sec. 3.2).

A cell of a mask at resolution S is incoherent when the mask at 2S loses information by
being down-sampled to S and up-sampled again: its 2 x 2 children at 2S are not all equal
(nearest up-sampling of any down-sampled value reproduces a uniform block only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def incoherent_cells(fine: torch.Tensor) -> torch.Tensor:
    """(R, 2S, 2S) binary masks -> (R, S, S) bool: cells whose 2 x 2 children differ."""
    f = fine.float()[:, None]
    return (F.max_pool2d(f, 2) != -F.max_pool2d(-f, 2))[:, 0]


def coverage_fraction(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(R, M, M) binary -> (R, size, size): the share of each cell the mask covers, M a
    multiple of size."""
    k = mask.shape[-1] // size
    return F.avg_pool2d(mask.float()[:, None], k)[:, 0]


def downsample(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(R, M, M) binary -> (R, size, size) binary by area vote (>= half), M a multiple."""
    return coverage_fraction(mask, size) >= 0.5


def incoherence_targets(fine: torch.Tensor, sizes) -> list[torch.Tensor]:
    """Per quadtree level S in `sizes`, (R, S, S) incoherence targets from a (R, M, M) binary
    mask with M = 2 * max(sizes) (the mask one level finer than the finest node)."""
    return [incoherent_cells(downsample(fine, 2 * s)) for s in sizes]


class IncoherenceDetector(nn.Module):
    """Sec. 3.2: a light FCN on the smallest RoI features (14 x 14) and the coarse mask,
    giving incoherence logits at the quadtree's root level (28 x 28)."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        self.low = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Conv2d(width + 1, width, 3, padding=1),
                                 nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))

    def forward(self, roi_features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """roi_features (R, C, s, s); coarse (R, S, S) mask probabilities, S = 2s -> (R, S, S)."""
        small = F.interpolate(coarse[:, None], size=roi_features.shape[-2:], mode="bilinear",
                              align_corners=False)
        x = self.low(torch.cat([roi_features, small], 1))
        return self.out(torch.cat([x, coarse[:, None]], 1))[:, 0]
