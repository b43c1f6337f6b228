"""The query's positional vector (AdaMixer Sec. 3.1) and iterative box refinement (Sec. 3.4).

A box is (x, y, z, r): centre x, y in input pixels, z = log2 of its scale sqrt(w h) and
r = log2 of its aspect h / w, so w = 2^(z - r/2), h = 2^(z + r/2). The paper writes the
scale relative to s_base = 4 px; here z is log2 of pixels, which shifts every z (boxes and
feature levels alike) by the constant log2(s_base) and changes nothing else.
"""
from __future__ import annotations

import torch


def xyzr_to_xyxy(xyzr: torch.Tensor) -> torch.Tensor:
    """(..., 4) (x, y, z, r) -> (..., 4) (x0, y0, x1, y1) in pixels."""
    xy, z, r = xyzr[..., :2], xyzr[..., 2:3], xyzr[..., 3:4]
    wh = 2.0 ** torch.cat([z - r / 2, z + r / 2], -1)
    return torch.cat([xy - wh / 2, xy + wh / 2], -1)


def xyxy_to_xyzr(boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., 4) (x0, y0, x1, y1) -> (..., 4) (x, y, z, r)."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=eps)
    xy = (boxes[..., :2] + boxes[..., 2:]) / 2
    z = 0.5 * torch.log2(wh[..., :1] * wh[..., 1:])
    r = torch.log2(wh[..., 1:] / wh[..., :1])
    return torch.cat([xy, z, r], -1)


def whole_image_xyzr(sizes: torch.Tensor) -> torch.Tensor:
    """(B, 2) image (h, w) -> (B, 4) the box covering each image: the initial positional
    vector of every query (not learned, as released)."""
    h, w = sizes[:, 0].float(), sizes[:, 1].float()
    boxes = torch.stack([torch.zeros_like(w), torch.zeros_like(h), w, h], -1)
    return xyxy_to_xyzr(boxes)


def refine_xyzr(xyzr: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """One refinement step (Sec. 3.4): the centre moves by delta_xy in units of the box's
    scale 2^z, z and r move by delta_z, delta_r."""
    xy = xyzr[..., :2] + delta[..., :2] * (2.0 ** xyzr[..., 2:3])
    return torch.cat([xy, xyzr[..., 2:] + delta[..., 2:]], -1)


def iof(boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, N, 4) xyxy -> (B, N, N) intersection over the foreground: area(i & j) / area(i)."""
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    return inter / area[:, :, None].clamp(min=eps)
