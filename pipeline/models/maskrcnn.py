"""Mask R-CNN (torchvision) on the project's backbone, with PointSup's point loss as an option.

The point loss (Cheng et al., CVPR 2022, Sec. 3.2) plugs in by one RoIHeads subclass that
reuses torchvision's box branch and sampling and replaces only the mask loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pipeline.models.backbone import PIXEL_MEAN, PIXEL_STD, ResNetFeatures
from pipeline.models.fpn import BackboneFPN


def point_loss(mask_logits: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor,
               point_labels: torch.Tensor) -> torch.Tensor:
    """BCE between mask logits read at the points and the point labels (PointSup Sec. 3.2).

    mask_logits (P, M, M) for each positive proposal's class; boxes (P, 4) xyxy proposals;
    points (P, K, 2) image coordinates (pixel centres); point_labels (P, K) in {0, 1, -1}.
    Points are mapped into box-normalised coordinates and read bilinearly
    (grid_sample, align_corners=False); points outside the box or labelled -1 weigh 0.
    """
    if mask_logits.numel() == 0:
        return mask_logits.sum() * 0
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    rel = (points - boxes[:, None, :2]) / wh[:, None, :]                       # [0, 1] in box
    inside = ((rel >= 0) & (rel <= 1)).all(-1) & (point_labels >= 0)
    grid = (rel * 2 - 1)[:, None]                                             # (P, 1, K, 2)
    sampled = F.grid_sample(mask_logits[:, None], grid, mode="bilinear",
                            align_corners=False)[:, 0, 0]                     # (P, K)
    # mean over every point, ignored ones weighted 0 (detectron2's PointSup): an instance
    # with few usable points counts for what it has, not as much as a fully labelled one
    return F.binary_cross_entropy_with_logits(sampled, point_labels.clamp(min=0).float(),
                                              weight=inside.float(), reduction="mean")


class PointSupRoIHeads(RoIHeads):
    """torchvision RoIHeads whose mask loss is the supervision's (pipeline/supervision.py):
    torchvision's per-pixel loss under full masks, PointSup's point loss under points."""

    def __init__(self, *args, supervision=None, drop_loss_iou: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.supervision = supervision        # a Supervision: its roi_mask_loss trains masks
        self.drop_loss_iou = drop_loss_iou    # > 0: CutLER's DropLoss on the box classifier

    @classmethod
    def replacing(cls, h: RoIHeads, **kwargs) -> "PointSupRoIHeads":
        """These heads in place of torchvision's `h` (MaskRCNN builds its RoIHeads itself):
        the same modules and settings, no weight created or copied."""
        return cls(h.box_roi_pool, h.box_head, h.box_predictor,
                   h.proposal_matcher.high_threshold, h.proposal_matcher.low_threshold,
                   h.fg_bg_sampler.batch_size_per_image, h.fg_bg_sampler.positive_fraction,
                   h.box_coder.weights, h.score_thresh, h.nms_thresh, h.detections_per_img,
                   mask_roi_pool=h.mask_roi_pool, mask_head=h.mask_head,
                   mask_predictor=h.mask_predictor, **kwargs)

    def select_training_samples(self, proposals, targets):
        out = super().select_training_samples(proposals, targets)
        self._samples = out        # (proposals, matched_idxs, labels, regression_targets)
        return out

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training or self.drop_loss_iou <= 0:
            return self._forward(features, proposals, image_shapes, targets)
        seen = {}
        hook = self.box_predictor.register_forward_hook(lambda m, i, o: seen.update(out=o))
        try:
            result, losses = self._forward(features, proposals, image_shapes, targets)
        finally:
            hook.remove()
        losses["loss_classifier"] = self._drop_loss_classifier(*seen["out"], targets)
        return result, losses

    def _drop_loss_classifier(self, class_logits, box_regression, targets):
        """CutLER's DropLoss (Wang et al., CVPR 2023, Sec. 3.2, Eq. 2): the box classifier's
        cross-entropy without the sampled RoIs whose predicted box overlaps no pseudo-label
        by more than `drop_loss_iou` IoU (their box of the highest-scoring class): a region
        the pseudo-labels miss is not pushed to background. Mean over the sampled RoIs."""
        from torchvision.ops import box_iou
        props, _, labels, _ = self._samples
        with torch.no_grad():
            boxes = self.box_coder.decode(box_regression, props)               # (R, C+1, 4)
            best = class_logits[:, 1:].argmax(1) + 1
            boxes = boxes[torch.arange(len(boxes), device=boxes.device), best]
            keep = []
            for b, t in zip(boxes.split([len(p) for p in props]), targets):
                if len(t["boxes"]) == 0:
                    keep.append(torch.ones(len(b), device=b.device))
                else:
                    keep.append((box_iou(b, t["boxes"]).amax(1) > self.drop_loss_iou).float())
        ce = F.cross_entropy(class_logits, torch.cat(labels), reduction="none")
        return (ce * torch.cat(keep)).mean()

    def _forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        mask_roi_pool, self.mask_roi_pool = self.mask_roi_pool, None  # box branch only
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            self.mask_roi_pool = mask_roi_pool
        props, matched, labels, _ = self._samples
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(props, pos)]
        idx = [m[i] for m, i in zip(matched, pos)]
        x = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        logits = self.mask_predictor(x)                                       # (P, C, M, M)
        losses["loss_mask"] = self.supervision.roi_mask_loss(logits, boxes, idx, targets)
        return result, losses


def _box_predictor(dim, classes):
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    return FastRCNNPredictor(dim, classes)


class _NoResize(GeneralizedRCNNTransform):
    """Normalise and batch only: the data loader already resized images, masks and points
    together, so geometry lives in one place."""

    def resize(self, image, target=None):
        return image, target


def build_maskrcnn(backbone: ResNetFeatures, num_classes: int, supervision="full",
                   fpn_channels: int = 256, mask_head_channels: int = 256,
                   box_head_dim: int = 1024, drop_loss_iou: float = 0.0,
                   **kwargs) -> MaskRCNN:
    """num_classes excludes background; supervision: a pipeline.supervision object (or its
    kind, "full" or "points"). Head widths default to torchvision's; kwargs go to
    torchvision's MaskRCNN (box thresholds, proposals and RoIs per image, ...)."""
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    model = MaskRCNN(
        BackboneFPN(backbone, fpn_channels),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
        box_predictor=_box_predictor(box_head_dim, num_classes + 1),
        mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels,
                                         num_classes + 1),
        **kwargs)
    model.transform = _NoResize(min_size=1, max_size=100000, image_mean=list(PIXEL_MEAN),
                                image_std=list(PIXEL_STD))
    from pipeline.supervision import as_supervision
    heads = model.roi_heads = PointSupRoIHeads.replacing(
        model.roi_heads, supervision=as_supervision(supervision),
        drop_loss_iou=float(drop_loss_iou))
    # torchvision names FPN maps '0'..'3','pool'; ours are p2..p6: pool over p2..p5
    from torchvision.ops import MultiScaleRoIAlign
    heads.box_roi_pool = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    heads.mask_roi_pool = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 14, 2)
    return model


def anchors(sizes):
    """One anchor size per FPN level, aspect ratios 1:2, 1:1, 2:1 (Mask R-CNN's)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    sizes = tuple((int(s),) for s in sizes)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
