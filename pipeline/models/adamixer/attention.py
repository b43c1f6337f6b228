"""Query self-attention with positional information (AdaMixer Sec. 3.4).

Queries attend to each other with their box's sinusoidal embedding added and a bias on the
attention logits from how much of query i's box is covered by query j's: alpha_h log IoF(i,
j) per head h (learned alpha_h, initialised uniformly in [0, 4] as released). Paper Table
4f: 42.7 AP with both, 41.2 with neither.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.adamixer.boxes import iof, xyzr_to_xyxy


def position_embedding(xyzr: torch.Tensor, dim: int, xy_unit: float = 1000.0,
                       temperature: float = 10000.0) -> torch.Tensor:
    """(B, N, 4) boxes -> (B, N, dim): dim / 4 sinusoidal features of each of x / xy_unit,
    y / xy_unit, z, r (sin and cos interleaved), concatenated."""
    k = dim // 4
    v = xyzr / xyzr.new_tensor([xy_unit, xy_unit, 1.0, 1.0])
    i = torch.arange(k, device=xyzr.device, dtype=torch.float32)
    freq = temperature ** (2 * (i // 2) / k)
    a = v[..., None] / freq                                              # (B, N, 4, k)
    emb = torch.stack([a[..., 0::2].sin(), a[..., 1::2].cos()], -1).flatten(-2)
    return emb.flatten(-2).to(xyzr.dtype)


class QuerySelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, xy_unit: float = 1000.0):
        super().__init__()
        self.heads, self.xy_unit = heads, xy_unit
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.iof_scale = nn.Parameter(torch.empty(heads).uniform_(0.0, 4.0))

    def forward(self, content: torch.Tensor, xyzr: torch.Tensor) -> torch.Tensor:
        b, n, d = content.shape
        with torch.no_grad():
            pe = position_embedding(xyzr, d, self.xy_unit).to(content.dtype)
            log_iof = torch.log(iof(xyzr_to_xyxy(xyzr)) + 1e-7)          # (B, N, N)
        bias = (log_iof[:, None] * self.iof_scale.view(1, -1, 1, 1)).reshape(b * self.heads, n, n)
        x = content + pe
        out, _ = self.attn(x, x, x, attn_mask=bias.to(x.dtype), need_weights=False)
        return self.norm(x + out)
