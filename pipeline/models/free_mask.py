"""Free Mask (FreeSOLO, Wang et al., CVPR 2022, Sec. 3.1): class-agnostic masks from features alone.

Batched over images of one size: all tensors carry a leading batch dimension and no step
loops over images or masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.ops.guided_filter import guided_filter
from pipeline.ops.matrix_nms import matrix_nms


@dataclass
class FreeMaskParams:
    query_scales: tuple = (1.0, 0.5, 0.25)
    mask_threshold: float = 0.5
    min_area: int = 1            # masks of <= min_area feature cells are dropped
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0
    pre_nms_topk: int = 0         # 0: all queries enter Matrix NMS
    top_k: int = 20
    embedding_dim: int = 128



def make_queries(feat: torch.Tensor, scales) -> torch.Tensor:
    """(B, C, h, w) -> (B, Q, C): the feature map resized to each scale, flattened (Sec. 3.1)."""
    qs = []
    h, w = feat.shape[-2:]
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        q = feat if size == (h, w) else F.interpolate(feat, size=size, mode="bilinear",
                                                      align_corners=False)
        qs.append(q.flatten(2))
    return torch.cat(qs, dim=2).transpose(1, 2)


def soft_masks(feat: torch.Tensor, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every query to every key, min-max normalised per query.

    Returns soft (B, Q, h*w) in [0, 1] and the normalised queries (B, Q, C).
    """
    keys = F.normalize(feat.flatten(2), dim=1)                  # (B, C, P)
    queries = F.normalize(make_queries(feat, scales), dim=2)    # (B, Q, C)
    sim = queries @ keys                                        # (B, Q, P)
    lo = sim.min(dim=2, keepdim=True).values
    hi = sim.max(dim=2, keepdim=True).values
    return (sim - lo) / (hi - lo).clamp(min=1e-6), queries


def maskness(soft: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """Mean soft value inside the binary mask (SOLOv2's maskness); 0 for empty masks."""
    b = binary.float()
    return (soft * b).sum(-1) / b.sum(-1).clamp(min=1.0)


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reorder dim 1 of t (B, N, ...) by idx (B, M)."""
    idx = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
    return t.gather(1, idx)


def free_masks(feat: torch.Tensor, p: FreeMaskParams) -> dict[str, torch.Tensor]:
    """Top-k free masks per image at feature resolution.

    feat: (B, C, h, w). Returns a dict of tensors with leading dims (B, K):
    soft (B, K, h, w), score (Matrix-NMS-decayed maskness), maskness, embedding (B, K, E),
    valid (B, K) bool (False for padding when an image has fewer than K candidates).
    """
    bsz, _, h, w = feat.shape
    soft, queries = soft_masks(feat, p.query_scales)
    binary = soft >= p.mask_threshold
    area = binary.sum(-1)
    mness = maskness(soft, binary)
    valid = area > p.min_area
    score = torch.where(valid, mness, torch.zeros_like(mness))

    order = score.argsort(dim=1, descending=True, stable=True)
    if p.pre_nms_topk and p.pre_nms_topk < order.shape[1]:
        order = order[:, :p.pre_nms_topk]

    soft, binary, score, mness, valid, queries = (
        _gather(t, order) for t in (soft, binary, score, mness, valid, queries))
    # invalid masks sit at the end with score 0 and never decay valid ones (they rank lower)
    decayed = matrix_nms(binary & valid[..., None], score, None, p.nms_kernel, p.nms_sigma)
    k = min(p.top_k, decayed.shape[1])
    top = decayed.argsort(dim=1, descending=True, stable=True)[:, :k]
    soft, decayed, mness, valid, queries = (
        _gather(t, top) for t in (soft, decayed, mness, valid, queries))
    emb = embed(queries, p.embedding_dim)
    return {
        "soft": soft.view(bsz, k, h, w),
        "score": decayed,
        "maskness": mness,
        "embedding": emb,
        "valid": valid & (decayed > 0),
    }


def embed(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., C) feature vectors linearly interpolated to `dim` channels (FreeSOLO's embedding)."""
    lead = vectors.shape[:-1]
    flat = vectors.reshape(-1, 1, vectors.shape[-1]).float()
    return F.interpolate(flat, size=dim, mode="linear", align_corners=False).view(*lead, dim)


def grey_guide(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 image -> (1, 1, H, W) grey in [0, 1]: the guided filter's guide."""
    return torch.from_numpy(image.mean(2, dtype=np.float32) / 255.0)[None, None]


def upsample_masks(soft: torch.Tensor, stride: int, input_hw, image_hw,
                   threshold: float = 0.5, guide: torch.Tensor | None = None,
                   guided_radius: float = 0.0, guided_eps: float = 1e-2) -> torch.Tensor:
    """(B, K, h, w) soft masks -> (B, K, H, W) binary masks at the original image size.

    Soft masks cover the stride grid of the resized input; crop that to the input size,
    then resize to the original image, and threshold again (Sec. 3.1). With a guide
    ((B, 1, H, W) grey image in [0, 1]) and guided_radius > 0 (in feature cells), the soft
    masks are first refined by a guided filter so their edges follow the image's.
    """
    b, k, h, w = soft.shape
    up = F.interpolate(soft, size=(h * stride, w * stride), mode="bilinear", align_corners=False)
    up = up[:, :, :input_hw[0], :input_hw[1]]
    if tuple(input_hw) != tuple(image_hw):
        up = F.interpolate(up, size=tuple(image_hw), mode="bilinear", align_corners=False)
    if guide is not None and guided_radius > 0 and k:
        cell = stride * image_hw[0] / input_hw[0]          # one feature cell, in image pixels
        up = guided_filter(guide.to(up), up, max(1, round(guided_radius * cell)), guided_eps)
    return up >= threshold
