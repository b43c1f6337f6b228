"""Sequence encoder and pixel decoder (Mask Transfiner, Sec. 3.4): a transformer over all
quadtree nodes of one RoI (paper default 3 layers, 4 heads), then a small MLP giving each
node's refined mask logit."""
from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    def __init__(self, dim: int, layers: int = 3, heads: int = 4, ff_mult: int = 4,
                 max_scores: int = 1 << 26):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim * ff_mult, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.heads = heads
        # attention scores held at once (RoIs x heads x L x L; 2^26 floats: 256 MB): RoIs
        # with many nodes are encoded a few at a time instead of all padded together
        self.max_scores = max_scores

    def forward(self, tokens: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """tokens (N, D) of nodes of several RoIs (roi (N,)): attention within each RoI only."""
        if len(tokens) == 0:
            return tokens
        order = torch.argsort(roi, stable=True)
        ids, counts = torch.unique_consecutive(roi[order], return_counts=True)
        groups = torch.split(tokens[order], counts.tolist())
        lengths, out, start = counts.tolist(), [], 0
        while start < len(groups):   # consecutive RoIs whose padded scores fit the budget
            stop, longest = start + 1, lengths[start]
            while stop < len(groups):
                longer = max(longest, lengths[stop])
                if (stop + 1 - start) * self.heads * longer * longer > self.max_scores:
                    break
                stop, longest = stop + 1, longer
            out.append(self.encode(groups[start:stop], counts[start:stop]))
            start = stop
        result = torch.empty_like(tokens)
        result[order] = torch.cat(out)
        return result

    def encode(self, groups, counts: torch.Tensor) -> torch.Tensor:
        """The nodes of a few RoIs padded to the longest, encoded, back to rows."""
        padded = nn.utils.rnn.pad_sequence(groups, batch_first=True)          # (B, L, D)
        pad = torch.arange(padded.shape[1], device=padded.device)[None] >= counts[:, None]
        return self.encoder(padded, src_key_padding_mask=pad)[~pad]


class PixelDecoder(nn.Module):
    def __init__(self, dim: int, zero_init: bool = False):
        """zero_init: the output layer starts at 0 (a residual decoder starts as the identity)."""
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)[:, 0]
