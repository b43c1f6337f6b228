"""What a student learns from (config group `supervision`), as the object the models call:
where the training targets come from, what each training sample hands the model, and the
mask loss of box-based mask heads (Mask R-CNN, AdaMixer, Mask Transfiner's refiner), and the
matching and mask terms of query-based heads without boxes (SparseInst).

- `FullMasks`: every pixel of each object (ground truth, or pseudo-masks: free masks or SOLO's
  pseudo-labels used as if they were masks); torchvision's per-pixel mask loss.
- `Points`: PointSup (Cheng et al., CVPR 2022, Sec. 3.2): a box and N points per object
  labelled object/background; the mask logits are read at the points (`point_loss`).
  Points are simulated from ground-truth masks when the targets carry none.

Each `conf/supervision/*.yaml` names its class (`_target_`); `build_supervision(node)` makes it.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import maskrcnn_loss
from torchvision.ops import roi_align

from pipeline.data.coco import load_coco
from pipeline.data.points import has_points, points_from_masks
from pipeline.errors import UserError


class Supervision:
    kind: str              # "full" or "points": the name a model built outside a config uses
    keys: tuple[str, ...]  # what a training sample hands the model beside labels and boxes

    def __init__(self, node=None):
        self.node = node
        self.name = str(node.name) if node is not None else self.kind

    def training_coco(self, split) -> dict:
        """The COCO dict to train on: supervision.annotations, else the split's ground truth."""
        if self.node.annotations:
            return load_coco(self.node.annotations, f"supervision={self.name} annotations")
        if not split.has_gt:
            raise UserError(f"supervision={self.name} needs ground truth in split "
                            f"{split.name!r} or supervision.annotations=<COCO file>")
        return split.coco

    def sample_targets(self, sample: dict, device, label_offset: int = 0) -> dict:
        """A training sample's targets for a model: labels (+ label_offset), boxes, keys."""
        out = {"labels": (sample["labels"] + label_offset).to(device),
               "boxes": sample["boxes"].to(device)}
        out.update({k: sample[k].to(device) for k in self.keys})
        return out

    def roi_mask_loss(self, logits: torch.Tensor, boxes: list[torch.Tensor],
                      objects: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """logits (sum K_i, C, M, M) of the training boxes [(K_i, 4)], objects [(K_i,)] each
        box's object in its image's targets."""
        raise NotImplementedError

    def roi_targets(self, targets: list[dict], objects: list[torch.Tensor],
                    boxes: list[torch.Tensor], size: int) -> dict:
        """What a refiner learns inside each box: 'masks' (K, size, size) or 'points' +
        'point_labels'."""
        raise NotImplementedError

    def dense_mask_terms(self, pred_masks, sample, prob_cls, padded_hw, weights, image=None):
        """Query-based heads without boxes (SparseInst): one image's mask logits (Q, h, w)
        matched to its objects -> (queries, objects, mask term per pair, objectness target
        per pair, queries whose class loss DropLoss drops or None)."""
        raise NotImplementedError


class FullMasks(Supervision):
    kind, keys = "full", ("masks",)

    def sample_targets(self, sample, device, label_offset=0):
        out = super().sample_targets(sample, device, label_offset)
        out["masks"] = out["masks"].to(torch.uint8)
        return out

    def roi_mask_loss(self, logits, boxes, objects, targets):
        if not len(logits):
            return logits.sum() * 0
        return maskrcnn_loss(logits, boxes, [t["masks"] for t in targets],
                             [t["labels"] for t in targets], objects)

    def roi_targets(self, targets, objects, boxes, size):
        fine = [roi_align(t["masks"][:, None].float(), torch.cat([o[:, None].to(b), b], 1),
                          (size, size), 1.0)
                for t, o, b in zip(targets, objects, boxes) if len(b)]
        return {"masks": torch.cat(fine)[:, 0] >= 0.5}

    def dense_mask_terms(self, pred_masks, sample, prob_cls, padded_hw, weights, image=None):
        from pipeline.models.sparseinst import full_mask_terms
        return full_mask_terms(pred_masks, sample, prob_cls, padded_hw, weights, image)


class Points(Supervision):
    kind, keys = "points", ("points", "point_labels")

    def training_coco(self, split):
        data = super().training_coco(split)
        if data["annotations"] and not has_points(data):
            data = points_from_masks(data, n=int(self.node.points),
                                     seed=int(self.node.point_seed))
            data["simulated_points"] = True  # saved beside the weights once the guard passed
        return data

    def roi_mask_loss(self, logits, boxes, objects, targets):
        from pipeline.models.maskrcnn import point_loss
        if not len(logits):
            return logits.sum() * 0
        cls = torch.cat([t["labels"][o] for t, o in zip(targets, objects)])
        chosen = logits[torch.arange(len(cls), device=logits.device), cls]
        t = self.roi_targets(targets, objects, boxes, 0)
        return point_loss(chosen, torch.cat(boxes), t["points"], t["point_labels"])

    def roi_targets(self, targets, objects, boxes, size):
        return {"points": torch.cat([t["points"][o] for t, o in zip(targets, objects)]),
                "point_labels": torch.cat([t["point_labels"][o]
                                           for t, o in zip(targets, objects)])}

    def dense_mask_terms(self, pred_masks, sample, prob_cls, padded_hw, weights, image=None):
        from pipeline.models.sparseinst import point_mask_terms
        return point_mask_terms(pred_masks, sample, prob_cls, padded_hw, weights, image)


def build_supervision(node) -> Supervision:
    from hydra.utils import get_class
    return get_class(str(node._target_))(node)


def as_supervision(s: Supervision | str) -> Supervision:
    """A model's `supervision` argument: the object, or its kind ("full", "points") for a
    model built outside a config (tests, benchmarks)."""
    if isinstance(s, Supervision):
        return s
    kinds = {c.kind: c for c in (FullMasks, Points)}
    if s not in kinds:
        raise UserError(f"supervision {s!r} unknown; use one of {sorted(kinds)}")
    return kinds[s]()
