"""Mask Transfiner's losses (Sec. 3.5): L = L_detect + L_coarse + L_refine (weights in the
config). L_coarse is Mask R-CNN's own mask loss (or PointSup's point loss under points).
L_detect: binary cross-entropy of the incoherence detector (root grid and inner nodes).
L_refine: L1 between the refined node probabilities and their labels, incoherent nodes only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor, balanced: bool,
                 max_weight: float = 50.0) -> torch.Tensor:
    """BCE; `balanced` (the project's option, not the paper's) weights the positives by
    negatives / positives of this batch (1 to max_weight), so a rare incoherent band is not
    learnt away as 'never incoherent'."""
    t = targets.float()
    pos_weight = None
    if balanced:
        pos = t.sum()
        ratio = (t.numel() - pos) / pos.clamp(min=1.0)
        pos_weight = ratio.clamp(1.0, max_weight).detach()
    return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight)


def detection_loss(root_logits, root_targets, node_logits, node_targets,
                   balanced: bool = False) -> torch.Tensor:
    """BCE over the whole 28 x 28 grid of each RoI, plus over the inner levels' nodes."""
    loss = balanced_bce(root_logits, root_targets, balanced)
    if len(node_logits):
        loss = loss + balanced_bce(node_logits, node_targets, balanced)
    return loss


def refinement_loss(node_logits: torch.Tensor, node_labels: torch.Tensor) -> torch.Tensor:
    """L1 between sigmoid(node logits) and the nodes' mask labels; 0 without nodes."""
    if len(node_logits) == 0:
        return node_logits.sum() * 0
    return F.l1_loss(node_logits.sigmoid(), node_labels.float())


def point_refinement_loss(node_logits, cover, boxes, points, labels) -> torch.Tensor:
    """Under points supervision (the project's design, not the paper's): the L1 refinement
    loss at the labelled points that fall in an incoherent node, each point read at the
    finest node covering it. cover (R, M, M) node index per output pixel (-1: none);
    boxes (R, 4); points (R, K, 2) image coordinates; labels (R, K) in {0, 1, -1}.
    0 (with a gradient path) when no labelled point falls in a node."""
    m = cover.shape[-1]
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    rel = (points - boxes[:, None, :2]) / wh[:, None]
    inside = ((rel >= 0) & (rel < 1)).all(-1) & (labels >= 0)
    cell = (rel.clamp(0, 1 - 1e-6) * m).long()
    r = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(labels)
    node = torch.where(inside, cover[r, cell[..., 1], cell[..., 0]],
                       torch.full_like(cover[r, 0, 0], -1))
    hit = node >= 0
    if not hit.any():
        return node_logits.sum() * 0
    return F.l1_loss(node_logits[node[hit]].sigmoid(), labels[hit].float())
