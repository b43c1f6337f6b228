"""Set prediction loss with Hungarian matching (AdaMixer Sec. 3.4, as in Sparse R-CNN and
DETR): each object is assigned to one query by minimising a cost of focal class cost + L1
box distance + negative GIoU; the matched queries learn their object's class and box, every
other query learns "no object" (focal loss). Applied after every stage. Released weights:
class 2, L1 5 (on boxes normalised by the image size), GIoU 2, for the cost and the loss; the
L1 cost compares (cx, cy, w, h), the L1 loss corners (both as released).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import (box_convert, generalized_box_iou, generalized_box_iou_loss,
                             sigmoid_focal_loss)


@dataclass
class SetLossWeights:
    cls: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def focal_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float,
               eps: float = 1e-8) -> torch.Tensor:
    """(Q, K) class logits, (M,) labels -> (Q, M): the focal loss of calling query q object
    m's class minus that of calling it background."""
    p = logits.sigmoid()[:, labels]
    pos = -(p + eps).log() * alpha * (1 - p) ** gamma
    neg = -(1 - p + eps).log() * (1 - alpha) * p ** gamma
    return pos - neg


def _cxcywh(boxes: torch.Tensor, whwh: torch.Tensor) -> torch.Tensor:
    """(M, 4) xyxy pixels -> (M, 4) (cx, cy, w, h) as fractions of the image: the L1
    matching cost's coordinates (as released; the L1 loss is on xyxy)."""
    return box_convert(boxes.float() / whwh, "xyxy", "cxcywh")


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    gt_boxes: torch.Tensor, whwh: torch.Tensor, w: SetLossWeights
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: (Q, K) logits, (Q, 4) xyxy boxes, (M,) labels, (M, 4) xyxy boxes, (4,)
    image size -> (query indices, object indices), each object exactly once (Q >= M)."""
    cost = (w.cls * focal_cost(logits.float(), labels, w.focal_alpha, w.focal_gamma)
            + w.l1 * torch.cdist(_cxcywh(boxes, whwh), _cxcywh(gt_boxes, whwh), p=1)
            - w.giou * generalized_box_iou(boxes.float(), gt_boxes.float()))
    rows, cols = linear_sum_assignment(cost.nan_to_num(1e6).cpu().numpy())
    return (torch.as_tensor(rows, dtype=torch.long, device=logits.device),
            torch.as_tensor(cols, dtype=torch.long, device=logits.device))


def set_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
             whwh: torch.Tensor, w: SetLossWeights) -> tuple[dict, list]:
    """One stage of a batch: logits (B, Q, K), boxes (B, Q, 4) xyxy, targets [{'labels' (M,),
    'boxes' (M, 4) xyxy}], whwh (B, 4) each image's size -> ({loss_cls, loss_l1, loss_giou},
    the matches [(query indices, object indices)] per image). Sums are divided by the number
    of objects in the batch."""
    cls_target = torch.zeros_like(logits)
    matches, pred, gt, size = [], [], [], []
    for i, t in enumerate(targets):
        if len(t["labels"]) == 0:
            matches.append((torch.zeros(0, dtype=torch.long, device=logits.device),) * 2)
            continue
        q, m = hungarian_match(logits[i].detach(), boxes[i].detach(), t["labels"], t["boxes"],
                               whwh[i], w)
        cls_target[i, q, t["labels"][m]] = 1.0
        matches.append((q, m))
        pred.append(boxes[i, q])
        gt.append(t["boxes"][m].to(boxes.dtype))
        size.append(whwh[i].expand(len(q), 4))
    num = max(sum(len(q) for q, _ in matches), 1)
    losses = {"loss_cls": w.cls * sigmoid_focal_loss(
        logits.float(), cls_target.float(), alpha=w.focal_alpha, gamma=w.focal_gamma,
        reduction="sum") / num}
    if pred:
        p, g, s = torch.cat(pred).float(), torch.cat(gt).float(), torch.cat(size).float()
        losses["loss_l1"] = w.l1 * (p / s - g / s).abs().sum() / num
        losses["loss_giou"] = w.giou * generalized_box_iou_loss(p, g, reduction="sum") / num
    else:
        zero = boxes.sum() * 0
        losses["loss_l1"], losses["loss_giou"] = zero, zero
    return losses, matches
