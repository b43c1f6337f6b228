"""One AdaMixer decoder stage (Sec. 3.4): query self-attention, adaptive 3D sampling and
adaptive mixing, a feed-forward network, then a class head and a box head whose output
refines the query's (x, y, z, r). Six stages are stacked; each one's boxes are supervised.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.adamixer.attention import QuerySelfAttention
from pipeline.models.adamixer.boxes import refine_xyzr
from pipeline.models.adamixer.mixing import AdaptiveMixing
from pipeline.models.adamixer.sampling import OffsetGenerator, sample_3d, sampling_points

PRIOR = -math.log((1 - 0.01) / 0.01)  # logit of a 0.01 prior (focal-loss initialisation)


def _branch(dim: int, layers: int) -> nn.Sequential:
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods)


class DecoderStage(nn.Module):
    def __init__(self, num_classes: int, dim: int = 256, feat_dim: int = 256, heads: int = 8,
                 ffn_dim: int = 2048, groups: int = 4, in_points: int = 32,
                 out_points: int = 128, level_tau: float = 2.0, xy_unit: float = 1000.0):
        super().__init__()
        self.level_tau = level_tau
        self.attention = QuerySelfAttention(dim, heads, xy_unit)
        self.offsets = OffsetGenerator(dim, groups, in_points)
        self.mixing = AdaptiveMixing(dim, feat_dim, groups, in_points, out_points)
        self.mixing_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True),
                                 nn.Linear(ffn_dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)
        self.cls_branch, self.reg_branch = _branch(dim, 1), _branch(dim, 1)
        self.cls = nn.Linear(dim, num_classes)
        self.reg = nn.Linear(dim, 4)
        # as released, every linear layer of the stage starts xavier-uniform (the attention's
        # and the mixing's output projections too), except the layers set below and the
        # offset and mixing-weight generators (zero weights, see sampling.py and mixing.py)
        for m in (*self.ffn, *self.cls_branch, *self.reg_branch, self.cls,
                  self.attention.attn.out_proj, self.mixing.out_proj):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls.bias, PRIOR)
        nn.init.zeros_(self.reg.weight)      # the first step keeps the box it is given
        nn.init.zeros_(self.reg.bias)

    def forward(self, content: torch.Tensor, xyzr: torch.Tensor, levels: list[torch.Tensor],
                strides) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """content (B, N, D), xyzr (B, N, 4), the 3D feature space -> (class logits (B, N, K),
        refined xyzr (B, N, 4), content (B, N, D))."""
        content = self.attention(content, xyzr)
        points = sampling_points(self.offsets(content), xyzr)
        sampled = sample_3d(points, levels, strides, self.level_tau)
        content = self.mixing_norm(self.mixing(sampled.to(content.dtype), content))
        content = self.ffn_norm(content + self.ffn(content))
        logits = self.cls(self.cls_branch(content))
        xyzr = refine_xyzr(xyzr, self.reg(self.reg_branch(content)).to(xyzr.dtype))
        return logits, xyzr, content
