"""Node encoder (Mask Transfiner, Sec. 3.4): each quadtree node becomes one token from four
cues, summed: fine-grained features of the FPN level matching the node's scale read at its
3 x 3 neighbourhood, the coarse mask's value at the node, its position relative to the RoI,
and its quadtree level. Optionally (`pixels`, this project's addition, not the paper's) a
fifth cue: the input image itself read at the same 3 x 3 neighbourhood, for images so small
that the finest FPN map (p2, stride 4) is coarser than the quadtree's finest cells."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

FPN_LEVELS = {2: "p2", 3: "p3", 4: "p4", 5: "p5"}   # name of the map with stride 2 ** k


def node_centres(boxes: torch.Tensor, nodes: torch.Tensor, sizes) -> torch.Tensor:
    """(N, 2) box-relative (u, v) in [0, 1] of each node's cell centre."""
    g = torch.tensor(sizes, device=nodes.device, dtype=boxes.dtype)[nodes[:, 1]]
    return torch.stack([(nodes[:, 3] + 0.5) / g, (nodes[:, 2] + 0.5) / g], 1)


def fpn_level(boxes: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """FPN level per node: the RoI's canonical level (Mask R-CNN's 4 + log2(sqrt(wh) / 224)),
    one finer per quadtree level, within p2..p5."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    k0 = torch.floor(4 + torch.log2(torch.sqrt(wh[:, 0] * wh[:, 1]) / 224 + 1e-8))
    return (k0[nodes[:, 0]] - nodes[:, 1]).clamp(2, 5).long()


def neighbourhood_xy(boxes: torch.Tensor, nodes: torch.Tensor, sizes) -> torch.Tensor:
    """(N, 9, 2) image coordinates of each node's centre and its 8 neighbours (one cell of
    the node's level apart)."""
    uv = node_centres(boxes, nodes, sizes)
    g = torch.tensor(sizes, device=nodes.device, dtype=boxes.dtype)[nodes[:, 1]]
    d = torch.tensor([-1.0, 0.0, 1.0], device=nodes.device, dtype=boxes.dtype)
    off = torch.stack(torch.meshgrid(d, d, indexing="xy"), -1).reshape(9, 2)  # (dx, dy)
    rel = uv[:, None, :] + off[None] / g[:, None, None]                       # (N, 9, 2)
    b = boxes[nodes[:, 0]]
    return b[:, None, :2] + rel * (b[:, None, 2:] - b[:, None, :2])


def _read(fmap: torch.Tensor, stride: int, xy: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) map of `stride`, (n, 9, 2) image coordinates -> (n, 9, C), bilinear."""
    extent = xy.new_tensor([fmap.shape[-1] * stride, fmap.shape[-2] * stride])
    grid = (xy / extent * 2 - 1)[None]                                         # (1, n, 9, 2)
    v = F.grid_sample(fmap, grid, mode="bilinear", align_corners=False)      # (1, C, n, 9)
    return v[0].permute(1, 2, 0)


def sample_neighbourhood(features: dict, image_of_roi: torch.Tensor, boxes: torch.Tensor,
                         nodes: torch.Tensor, sizes) -> torch.Tensor:
    """(N, 9 * C): bilinear features at the node's centre and its 8 neighbours (one cell of
    the node's level apart), from the FPN map of the node's scale."""
    xy = neighbourhood_xy(boxes, nodes, sizes)
    levels = fpn_level(boxes, nodes)
    img = image_of_roi[nodes[:, 0]]
    c = features["p2"].shape[1]
    out = xy.new_zeros(len(nodes), 9, c)
    for k, name in FPN_LEVELS.items():
        for i in torch.unique(img[levels == k]).tolist():
            sel = torch.nonzero((levels == k) & (img == i), as_tuple=True)[0]
            out[sel] = _read(features[name][i:i + 1], 2 ** k, xy[sel]).to(out.dtype)
    return out.flatten(1)


def sample_pixels(images: torch.Tensor, image_of_roi: torch.Tensor, boxes: torch.Tensor,
                  nodes: torch.Tensor, sizes) -> torch.Tensor:
    """(N, 9 * 3): the (B, 3, H, W) input images (as the backbone sees them) read bilinearly
    at each node's 3 x 3 neighbourhood (the `pixels` cue; this project's addition)."""
    xy = neighbourhood_xy(boxes, nodes, sizes)
    img = image_of_roi[nodes[:, 0]]
    out = xy.new_zeros(len(nodes), 9, images.shape[1])
    for i in torch.unique(img).tolist():
        sel = torch.nonzero(img == i, as_tuple=True)[0]
        out[sel] = _read(images[i:i + 1], 1, xy[sel]).to(out.dtype)
    return out.flatten(1)


def roi_colours(images: torch.Tensor, image_of_roi: torch.Tensor, boxes: torch.Tensor,
                coarse: torch.Tensor) -> torch.Tensor:
    """(R, 2, 3): each RoI's mean colour inside and outside its coarse (R, S, S) mask, within
    its box (the `contrast` cue's object and background colours; this project's addition)."""
    rois = torch.cat([image_of_roi[:, None].to(boxes.dtype), boxes], 1)
    crop = roi_align(images, rois.to(images.dtype), coarse.shape[-2:], 1.0, 2, aligned=True)
    w = coarse[:, None].to(crop.dtype)                                          # (R, 1, S, S)
    inside = (crop * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1e-6)
    outside = (crop * (1 - w)).sum((2, 3)) / (1 - w).sum((2, 3)).clamp(min=1e-6)
    return torch.stack([inside, outside], 1)


def contrast(pixels: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(N, 9 * 3) node neighbourhoods, (N, 2, 3) their RoI's object / background colours ->
    (N, 27): squared colour distance of each neighbour to the object, to the background, and
    their difference (nearer the object: negative), what the guided filter's snapping uses."""
    px = pixels.view(len(pixels), 9, 3)
    d_in = ((px - colours[:, None, 0]) ** 2).sum(-1)
    d_out = ((px - colours[:, None, 1]) ** 2).sum(-1)
    return torch.cat([d_in, d_out, d_in - d_out], 1)


def sinusoid(uv: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, 2) in [0, 1] -> (N, dim) sine / cosine features of each coordinate."""
    n = dim // 4
    freq = torch.exp(torch.arange(n, device=uv.device, dtype=uv.dtype) * (-math.log(1e3) / n))
    a = uv[:, :, None] * 2 * math.pi * 16 * freq                               # (N, 2, n)
    return torch.cat([a.sin(), a.cos()], -1).flatten(1)


class NodeEncoder(nn.Module):
    def __init__(self, channels: int, dim: int, levels: int, pixels: bool = False,
                 contrast: bool = False):
        super().__init__()
        self.dim = dim
        self.fine = nn.Sequential(nn.Linear(9 * channels, dim), nn.ReLU(inplace=True),
                                  nn.Linear(dim, dim))
        self.pixels = nn.Sequential(nn.Linear(9 * 3, dim), nn.ReLU(inplace=True),
                                    nn.Linear(dim, dim)) if pixels else None
        self.contrast = nn.Sequential(nn.Linear(27, dim), nn.ReLU(inplace=True),
                                      nn.Linear(dim, dim)) if contrast else None
        self.coarse = nn.Linear(1, dim)
        self.position = nn.Linear(4 * (dim // 4), dim)
        self.level = nn.Embedding(levels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features, image_of_roi, boxes, nodes, coarse_at_nodes, sizes,
                colours=None):
        """-> (N, dim) node tokens; coarse_at_nodes (N,) mask probabilities. With `pixels` or
        `contrast`, features["image"] holds the (B, 3, H, W) input images; with `contrast`,
        colours (R, 2, 3) each RoI's object and background colours (roi_colours)."""
        fine = sample_neighbourhood(features, image_of_roi, boxes, nodes, sizes)
        pos = sinusoid(node_centres(boxes, nodes, sizes), self.dim)
        x = (self.fine(fine) + self.coarse(coarse_at_nodes[:, None] * 2 - 1)
             + self.position(pos) + self.level(nodes[:, 1]))
        if self.pixels is not None or self.contrast is not None:
            px = sample_pixels(features["image"], image_of_roi, boxes, nodes, sizes)
            if self.pixels is not None:
                x = x + self.pixels(px)
            if self.contrast is not None:
                x = x + self.contrast(contrast(px, colours[nodes[:, 0]]))
        return self.norm(x)


def coarse_at(coarse: torch.Tensor, nodes: torch.Tensor, sizes) -> torch.Tensor:
    """(N,) coarse mask probability at each node: the (R, S, S) coarse mask resized
    (bilinear) to the node's level and read at its cell."""
    out = coarse.new_zeros(len(nodes))
    for level, s in enumerate(sizes):
        sel = nodes[:, 1] == level
        if sel.any():
            up = coarse if coarse.shape[-1] == s else F.interpolate(
                coarse[:, None], size=(s, s), mode="bilinear", align_corners=False)[:, 0]
            n = nodes[sel]
            out[sel] = up[n[:, 0], n[:, 2], n[:, 3]]
    return out
