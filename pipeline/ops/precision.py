"""Losses in float32 whatever precision the network ran in (hardware.amp: float16 on CUDA,
bfloat16 on a CPU): a sum over thousands of mask pixels or a softmax over a queue of
negatives keeps its digits; only the network's convolutions run in reduced precision."""
from __future__ import annotations

import torch


def to_float32(tree):
    """Every floating-point tensor in a nest of dicts, lists and tuples as float32."""
    if isinstance(tree, torch.Tensor):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: to_float32(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_float32(v) for v in tree)
    return tree


def full_precision(device: torch.device):
    """A context in which autocast is off (ops run in their inputs' dtype)."""
    return torch.autocast(device.type, enabled=False)
