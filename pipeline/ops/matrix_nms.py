"""Matrix NMS (SOLOv2, Wang et al., NeurIPS 2020, Sec. 4): parallel soft suppression of masks.

Each mask's score decays by how much it overlaps higher-scored masks, compensated by how
much those masks are themselves suppressed; one matrix computation, no sequential loop.
"""
from __future__ import annotations

import torch


def mask_iou_matrix(masks: torch.Tensor) -> torch.Tensor:
    """(B, N, P) binary masks -> (B, N, N) IoU."""
    m = masks.float()
    inter = m @ m.transpose(1, 2)
    area = m.sum(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union.clamp(min=1e-6)


def matrix_nms(masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None = None,
               kernel: str = "gaussian", sigma: float = 2.0) -> torch.Tensor:
    """Decayed scores for masks sorted by descending score.

    masks: (B, N, P) binary, scores: (B, N) sorted descending within each row,
    labels: (B, N) or None (one shared label, as in class-agnostic free masks).
    Returns (B, N) decayed scores. Padding rows (score 0, empty mask) do not affect others.
    """
    if masks.dim() == 2:
        return matrix_nms(masks[None], scores[None],
                          None if labels is None else labels[None], kernel, sigma)[0]
    b, n, _ = masks.shape
    if n == 0:
        return scores
    iou = mask_iou_matrix(masks).triu(diagonal=1)  # iou[i, j], i ranked above j
    if labels is not None:
        iou = iou * (labels[:, :, None] == labels[:, None, :]).float()
    # how much each mask i is itself overlapped by a higher-ranked one
    compensate = iou.max(dim=1).values  # (B, N): max over rows i' < i
    comp = compensate[:, :, None].expand(b, n, n)  # comp[b, i, j] = compensate[b, i]
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou ** 2 - comp ** 2))
    elif kernel == "linear":
        decay = (1 - iou) / (1 - comp).clamp(min=1e-6)
    else:
        raise ValueError(f"matrix_nms kernel must be 'gaussian' or 'linear', got {kernel!r}")
    # only pairs i < j count; the lower triangle (and the diagonal) must not lower the min
    upper = torch.ones(n, n, dtype=torch.bool, device=masks.device).triu(diagonal=1)
    decay = torch.where(upper, decay, torch.ones_like(decay))
    return scores * decay.min(dim=1).values


