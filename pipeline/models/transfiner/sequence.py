"""Sequence encoder and pixel decoder (Mask Transfiner, Sec. 3.4): a transformer over all
quadtree nodes of one RoI (paper default 3 layers, 4 heads), then a small MLP giving each
node's refined mask logit."""
from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    def __init__(self, dim: int, layers: int = 3, heads: int = 4, ff_mult: int = 4):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim * ff_mult, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """tokens (N, D) of nodes of several RoIs (roi (N,)): attention within each RoI only."""
        if len(tokens) == 0:
            return tokens
        order = torch.argsort(roi, stable=True)
        ids, counts = torch.unique_consecutive(roi[order], return_counts=True)
        groups = torch.split(tokens[order], counts.tolist())
        padded = nn.utils.rnn.pad_sequence(groups, batch_first=True)          # (B, L, D)
        pad = torch.arange(padded.shape[1], device=roi.device)[None] >= counts[:, None]
        out = self.encoder(padded, src_key_padding_mask=pad)[~pad]           # back to rows
        result = torch.empty_like(tokens)
        result[order] = out
        return result


class PixelDecoder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)[:, 0]
