"""Guided filter (He, Sun, Tang, ECCV 2010, Sec. 3): edge-aware refinement of soft masks.

Coarse masks upsampled from a stride-16 feature grid have blurry, blocky edges; filtering
them with the image as the guide snaps the edges to the image's own edges (a cheap,
CRF-free stand-in for the dense CRF of CutLER's MaskCut).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, windows clipped at the image border."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """guide: (B, 1, H, W) grey image in [0, 1]; src: (B, K, H, W) soft masks.

    The output is locally an affine function of the guide, a * I + b, fitted to src in each
    window with ridge weight eps (Eq. 4-6): larger eps smooths more, smaller follows edges.
    """
    if r < 1:
        return src
    mean_i = box_mean(guide, r)
    var_i = box_mean(guide * guide, r) - mean_i ** 2
    mean_p = box_mean(src, r)
    cov_ip = box_mean(guide * src, r) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, r) * guide + box_mean(b, r)
