"""The point quadtree over incoherent nodes (Mask Transfiner, Sec. 3.3).

Root nodes are the incoherent cells of the 28 x 28 grid; each node of a level splits into its
4 quadrants at the next level (56, then 112); a node of an inner level splits only when it is
itself incoherent (detected at its level). Nodes are rows (roi, level, y, x) with (y, x) the
cell on the grid of size sizes[level].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def roots(incoherent: torch.Tensor, limit: int = 0, scores=None) -> torch.Tensor:
    """(R, S, S) bool -> (N, 4) nodes at level 0; at most `limit` per RoI (highest scores
    first) when limit > 0."""
    r, y, x = torch.nonzero(incoherent, as_tuple=True)
    nodes = torch.stack([r, torch.zeros_like(r), y, x], 1)
    if limit > 0 and scores is not None:
        nodes = cap_per_roi(nodes, scores[r, y, x], limit)
    return nodes


def dilate(cells: torch.Tensor, by: int) -> torch.Tensor:
    """(R, S, S) bool -> the same cells and every cell within `by` cells of one (a square
    neighbourhood)."""
    k = 2 * by + 1
    return F.max_pool2d(cells.float()[:, None], k, stride=1, padding=by)[:, 0] > 0


def children(nodes: torch.Tensor) -> torch.Tensor:
    """(N, 4) -> (4N, 4): the 4 quadrants of each node at the next level."""
    if len(nodes) == 0:
        return nodes
    dy = torch.tensor([0, 0, 1, 1], device=nodes.device)
    dx = torch.tensor([0, 1, 0, 1], device=nodes.device)
    n = nodes[:, None, :].repeat(1, 4, 1)
    n[..., 1] += 1
    n[..., 2] = n[..., 2] * 2 + dy
    n[..., 3] = n[..., 3] * 2 + dx
    return n.reshape(-1, 4)


def rank_in_group(scores: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(N,) scores, (N,) group (RoI) ids >= 0 -> (N,) each element's rank within its group,
    0 for the highest score (equal scores: the earlier first)."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]   # by group, each high to low
    g = group[order]
    counts = torch.bincount(g)
    rank = torch.empty_like(group)
    rank[order] = torch.arange(len(g), device=g.device) - (torch.cumsum(counts, 0) - counts)[g]
    return rank


def cap_per_roi(nodes: torch.Tensor, scores: torch.Tensor, limit: int) -> torch.Tensor:
    """Keep at most `limit` nodes per RoI, the highest scores first (bounded sequences)."""
    if len(nodes) == 0:
        return nodes
    order = torch.argsort(scores, descending=True, stable=True)
    keep = rank_in_group(scores, nodes[:, 0]) < limit
    return nodes[order][keep[order]]


def expected_top(probs: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(N,) probabilities, (N,) group (RoI) ids -> (N,) bool: in each group the
    round(sum of its probabilities) highest, the count a calibrated detector expects."""
    if len(probs) == 0:
        return torch.zeros(0, dtype=torch.bool, device=probs.device)
    want = torch.zeros(int(group.max()) + 1, device=probs.device, dtype=probs.dtype).index_add_(
        0, group, probs).round().long()
    return rank_in_group(probs, group) < want[group]


def build(root_incoherent: torch.Tensor, split, depth: int) -> list[torch.Tensor]:
    """Nodes per level: roots from `root_incoherent`, then children of the nodes for which
    `split(level, nodes)` (bool per node) holds. depth = number of levels (3: 28/56/112)."""
    levels = [roots(root_incoherent)]
    for level in range(1, depth):
        parents = levels[-1] if level == 1 else levels[-1][split(level - 1, levels[-1])]
        levels.append(children(parents))
    return levels


def paint(base: torch.Tensor, nodes: torch.Tensor, values: torch.Tensor,
          sizes) -> torch.Tensor:
    """(R, M, M) mask at the finest output size M; each node overwrites the block it covers
    with its value, coarse levels first so finer nodes win. Pixels under no node keep `base`."""
    out = base.clone()
    m = base.shape[-1]
    for level in range(len(sizes)):
        sel = nodes[:, 1] == level
        if not sel.any():
            continue
        k = m // sizes[level]
        n, v = nodes[sel], values[sel].to(out.dtype)
        off = torch.arange(k, device=base.device)
        ys = (n[:, 2, None] * k + off)[:, :, None].expand(-1, k, k)
        xs = (n[:, 3, None] * k + off)[:, None, :].expand(-1, k, k)
        rs = n[:, 0, None, None].expand(-1, k, k)
        out[rs, ys, xs] = v[:, None, None].expand(-1, k, k)
    return out


def coverage(nodes: torch.Tensor, rois: int, sizes) -> torch.Tensor:
    """(R, M, M) index of the finest node covering each output pixel (-1: none)."""
    m = sizes[-1]
    base = torch.full((rois, m, m), -1.0, device=nodes.device)
    return paint(base, nodes, torch.arange(len(nodes), device=nodes.device).float(),
                 sizes).long()
