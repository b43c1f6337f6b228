"""Guided filter (He, Sun, Tang, ECCV 2010, Sec. 3): edge-aware refinement of soft masks.

Coarse masks upsampled from a stride-16 feature grid have blurry, blocky edges; filtering
them with the image as the guide snaps the edges to the image's own edges (a cheap,
CRF-free stand-in for the dense CRF of CutLER's MaskCut).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, windows clipped at the image border.

    Separable: a sum of 2r+1 shifted copies along each axis, then a division by the clipped
    window's size. Same result as avg_pool2d(count_include_pad=False) up to float rounding
    (~1e-7), 5-8x faster on the CPU for the radii used here (avg_pool2d is O(r^2) per pixel).
    """
    for dim in (-1, -2):
        n = x.shape[dim]
        pad = [r, r, 0, 0] if dim == -1 else [0, 0, r, r]
        padded = F.pad(x, pad)
        total = padded.narrow(dim, 0, n).clone()
        for k in range(1, 2 * r + 1):
            total += padded.narrow(dim, k, n)
        i = torch.arange(n, device=x.device)
        count = ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)
        x = total / (count.view(-1, 1) if dim == -2 else count)
    return x


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float,
                  chunk: int = 16) -> torch.Tensor:
    """guide: (B, 1, H, W) grey image in [0, 1]; src: (B, K, H, W) soft masks.

    The output is locally an affine function of the guide, a * I + b, fitted to src in each
    window with ridge weight eps (Eq. 4-6): larger eps smooths more, smaller follows edges.
    The guide's statistics are computed once; the masks go `chunk` at a time, so 100 masks
    of an 800 x 1333 image need MBs, not GBs (each mask's result is the same either way).
    """
    if r < 1 or src.shape[1] == 0:
        return src
    mean_i = box_mean(guide, r)
    var_i = box_mean(guide * guide, r) - mean_i ** 2
    out = []
    for part in src.split(chunk, dim=1):
        mean_p = box_mean(part, r)
        cov_ip = box_mean(guide * part, r) - mean_i * mean_p
        a = cov_ip / (var_i + eps)
        b = mean_p - a * mean_i
        out.append(box_mean(a, r) * guide + box_mean(b, r))
    return torch.cat(out, 1)
