"""Adaptive 3D feature sampling (AdaMixer Sec. 3.2).

From its content vector each query predicts, per group g, P_in offsets (dx, dy, dz): the
sampling point is (x + dx w, y + dy h, z + dz) around its box (x, y, z, r). Features are
read bilinearly in (x, y) on every level and the levels are mixed with Gaussian weights
around the point's z: w_j = softmax_j(-(z - z_j)^2 / tau), tau = 2 (Eq. 6). Each group reads
its own d_feat / G channels, so a query gathers G x P_in vectors of d_feat / G channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OffsetGenerator(nn.Module):
    """Content vector -> (B, N, G, P_in, 3) offsets. Initialised as released: zero weights;
    the bias spreads the points uniformly over the box (+-0.5 of its width and height) and
    starts one level below the box's own z (dz = -1)."""

    def __init__(self, dim: int, groups: int, points: int):
        super().__init__()
        self.groups, self.points = groups, points
        self.linear = nn.Linear(dim, groups * points * 3)
        with torch.no_grad():
            nn.init.zeros_(self.linear.weight)
            bias = self.linear.bias.view(groups, points, 3)
            nn.init.uniform_(bias[..., :2], -0.5, 0.5)
            bias[..., 2] = -1.0

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        b, n = content.shape[:2]
        return self.linear(content).view(b, n, self.groups, self.points, 3)


def sampling_points(offsets: torch.Tensor, xyzr: torch.Tensor) -> torch.Tensor:
    """(B, N, G, P, 3) offsets relative to the box, (B, N, 4) boxes (x, y, z, r) -> (B, N, G,
    P, 3) points (x, y in pixels, z in the feature space's log2 units)."""
    z, r = xyzr[..., 2:3], xyzr[..., 3:4]
    wh = 2.0 ** torch.cat([z - r / 2, z + r / 2], -1)                  # (B, N, 2)
    xy = xyzr[:, :, None, None, :2] + offsets[..., :2] * wh[:, :, None, None]
    return torch.cat([xy, xyzr[:, :, None, None, 2:3] + offsets[..., 2:3]], -1)


def level_weights(z: torch.Tensor, level_z: torch.Tensor, tau: float = 2.0) -> torch.Tensor:
    """(...) heights, (L,) level heights -> (..., L) Gaussian weights over the levels,
    normalised to sum 1 (Eq. 6)."""
    d = z[..., None] - level_z.to(z)
    return torch.softmax(-d * d / tau, -1)


def sample_3d(points: torch.Tensor, levels: list[torch.Tensor], strides, tau: float = 2.0
              ) -> torch.Tensor:
    """points (B, N, G, P, 3), levels [(B, D, H_j, W_j)] of strides s_j -> (B, N, G, P, D/G).

    On level j the point (x, y) in input pixels is read bilinearly at (x / s_j, y / s_j)
    cells (cell centres at half-integers, grid_sample with align_corners=False), zero
    outside the map; group g reads channels [g D/G, (g+1) D/G). Read in the points' precision
    (float32 under autocast: a bfloat16 grid is ~0.3 px coarse on a 160 px image)."""
    b, n, g, p, _ = points.shape
    d = levels[0].shape[1]
    c = d // g
    level_z = torch.log2(torch.tensor([float(s) for s in strides], device=points.device))
    w = level_weights(points[..., 2], level_z, tau)                    # (B, N, G, P, L)
    xy = points[..., :2].permute(0, 2, 1, 3, 4).reshape(b * g, n, p, 2)  # (B G, N, P, 2)
    out = points.new_zeros(b * g, c, n, p)
    for j, (feat, s) in enumerate(zip(levels, strides)):
        h_j, w_j = feat.shape[-2:]
        size = xy.new_tensor([w_j * s, h_j * s])
        grid = xy / size * 2 - 1
        read = F.grid_sample(feat.reshape(b * g, c, h_j, w_j).to(grid.dtype), grid,
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        wj = w[..., j].permute(0, 2, 1, 3).reshape(b * g, 1, n, p)
        out = out + read * wj
    return out.view(b, g, c, n, p).permute(0, 3, 1, 4, 2)             # (B, N, G, P, C)
