"""Mask losses for weak supervision: Dice, box-projection Dice, pairwise colour affinity."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SOLO's Dice loss per row: 1 - 2 sum(p t) / (sum p^2 + sum t^2). pred, target (N, ...)."""
    p, t = pred.flatten(1), target.flatten(1).float()
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def projection_dice_loss(prob: torch.Tensor, target: torch.Tensor,
                         reduce: str = "max") -> torch.Tensor:
    """Dice between projections onto the x and y axes (FreeSOLO Sec. 3.2 / BoxInst Sec. 3.1).

    With `max`, a mask and its box agree exactly when the mask touches every row and column
    of the box: the projection carries the box, not the shape. prob, target: (N, H, W).
    """
    t = target.float()
    if reduce == "max":
        px, py, tx, ty = prob.amax(1), prob.amax(2), t.amax(1), t.amax(2)
    elif reduce == "mean":
        px, py, tx, ty = prob.mean(1), prob.mean(2), t.mean(1), t.mean(2)
    else:
        raise ValueError(f"reduce must be max or mean, got {reduce!r}")
    return dice_loss(px, tx) + dice_loss(py, ty)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 255] -> CIE Lab (D65)."""
    c = rgb / 255.0
    c = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=c.dtype, device=c.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, c)
    xyz = xyz / torch.tensor([0.95047, 1.0, 1.08883], device=c.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    L = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], 1)


def neighbours(x: torch.Tensor, kernel: int = 3, dilation: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, K*K-1, H, W): each pixel's dilated neighbours, centre excluded."""
    b, c, h, w = x.shape
    pad = dilation * (kernel // 2)
    u = F.unfold(x, kernel, dilation=dilation, padding=pad).view(b, c, kernel * kernel, h, w)
    centre = kernel * kernel // 2
    return torch.cat([u[:, :, :centre], u[:, :, centre + 1:]], 2)


def colour_similarity(lab: torch.Tensor, kernel: int = 3, dilation: int = 2,
                      theta: float = 2.0) -> torch.Tensor:
    """(B, 3, H, W) Lab -> (B, K*K-1, H, W) similarity exp(-||lab_i - lab_j|| / theta)."""
    diff = lab[:, :, None] - neighbours(lab, kernel, dilation)
    return torch.exp(-diff.norm(dim=1) / theta)


def neighbour_offsets(kernel: int = 3, dilation: int = 2) -> list[tuple[int, int]]:
    """(dy, dx) of each dilated neighbour, in `neighbours`' order (row-major, centre out)."""
    r = kernel // 2
    return [((i - r) * dilation, (j - r) * dilation) for i in range(kernel)
            for j in range(kernel) if (i, j) != (r, r)]


def overlap(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of x (..., H, W) at the pixels whose (dy, dx) neighbour lies in the image:
    (those pixels, their neighbours), same shape; no copy."""
    h, w = x.shape[-2:]
    centre = x[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    other = x[..., max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
    return centre, other


def pairwise_affinity_loss(logits: torch.Tensor, similarity: torch.Tensor,
                           region: torch.Tensor, threshold: float = 0.3,
                           kernel: int = 3, dilation: int = 2,
                           neighbour_ok: torch.Tensor | None = None) -> torch.Tensor:
    """BoxInst's pairwise loss (Tian et al., CVPR 2021, Sec. 3.2), per instance.

    logits (N, H, W) mask logits; similarity (N, K*K-1, H, W) of each instance's image;
    region (N, H, W) bool where an edge's centre pixel must lie (inside the target box and
    the image); neighbour_ok (N, H, W) where its other end may lie (BoxInst: anywhere in the
    image, so edges crossing the box border count; None: inside `region` too).
    Neighbours with similar colour (>= threshold) are pushed to the same label:
    -log(p_i p_j + (1 - p_i)(1 - p_j)), averaged over those edges.

    One neighbour offset at a time on overlapping views (no unfold copies), and
    log(p_i p_j + (1 - p_i)(1 - p_j)) = softplus(a_i + a_j) - softplus(a_i) - softplus(a_j)
    for logits a: exact, stable, one softplus per edge instead of a logaddexp of two sums.
    """
    other = region if neighbour_ok is None else neighbour_ok
    sp = F.softplus(logits)
    total = logits.new_zeros(len(logits))
    count = logits.new_zeros(len(logits))
    for k, (dy, dx) in enumerate(neighbour_offsets(kernel, dilation)):
        a_i, a_j = overlap(logits, dy, dx)
        sp_i, sp_j = overlap(sp, dy, dx)
        in_region, _ = overlap(region, dy, dx)
        _, ok_j = overlap(other, dy, dx)
        sim, _ = overlap(similarity[:, k], dy, dx)
        edge = ((sim >= threshold) & in_region & ok_j).float()
        log_same = F.softplus(a_i + a_j) - sp_i - sp_j
        total = total + (log_same * edge).flatten(1).sum(1)
        count = count + edge.flatten(1).sum(1)
    return -total / count.clamp(min=1.0)


def embedding_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per row (FreeSOLO's semantic embedding term)."""
    return 1 - F.cosine_similarity(pred, target, dim=1)
