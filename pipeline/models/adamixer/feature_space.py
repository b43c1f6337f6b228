"""The backbone's multi-scale maps as one 3D feature space (AdaMixer Sec. 3.2).

No pyramid network: each level (res2..res5, strides 4..32) is projected linearly (a 1x1
convolution) to the same width d_feat; a shared GroupNorm follows, as released. The level
of stride s sits at height z_j = log2(s) of the space (the paper: log2(s / s_base); boxes
and levels share the shift, see boxes.py). Paper Table 4c: 42.7 AP without FPN vs 42.1
with FPN and 41.7 with PAFPN on top. `neck="fpn"` is that Table 4c variant: a feature
pyramid (lateral 1x1 and output 3x3 convolutions, top-down sums) in place of the 1x1
projections, the shared GroupNorm after it.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from pipeline.errors import UserError

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
NECKS = ("none", "fpn")


class FeatureSpace3D(nn.Module):
    def __init__(self, in_channels: dict, dim: int, levels=("res2", "res3", "res4", "res5"),
                 neck: str = "none"):
        super().__init__()
        if neck not in NECKS:
            raise UserError(f"adamixer.neck={neck!r} unknown; use one of {', '.join(NECKS)}")
        self.levels = tuple(levels)
        self.strides = tuple(STRIDES[n] for n in self.levels)
        self.neck = neck
        if neck == "fpn":
            self.fpn = FeaturePyramidNetwork([in_channels[n] for n in self.levels], dim)
        else:
            self.project = nn.ModuleList(nn.Conv2d(in_channels[n], dim, 1) for n in self.levels)
            for conv in self.project:
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.norm = nn.GroupNorm(math.gcd(32, dim), dim)

    @property
    def level_z(self) -> torch.Tensor:
        """(L,) the height z_j = log2(stride) of each level in the space."""
        return torch.log2(torch.tensor(self.strides, dtype=torch.float32))

    def forward(self, feats: dict) -> list[torch.Tensor]:
        if self.neck == "fpn":
            out = self.fpn(OrderedDict((n, feats[n]) for n in self.levels)).values()
            return [self.norm(x) for x in out]
        return [self.norm(p(feats[n])) for p, n in zip(self.project, self.levels)]
