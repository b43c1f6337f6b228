"""The AdaMixer detector (Gao et al., CVPR 2022) with a mask head: backbone -> 3D feature
space -> N queries refined by 6 decoder stages -> boxes and classes; masks on the final
boxes. Like torchvision's detectors, forward returns the losses when given targets (so the
mask head trains inside the same forward under DDP) and the raw outputs otherwise.

Queries (Sec. 3.1): a learned content vector each (layer-normalised, as released) and the
box covering the whole image as every query's initial (x, y, z, r), which is not learned.
Between stages the boxes are refined and detached (each stage learns its own step, Sec. 3.4).
Boxes, sampling locations and RoIs are float32 under mixed precision (the features need not be).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import clip_boxes_to_image

from pipeline.models.adamixer.boxes import whole_image_xyzr, xyzr_to_xyxy
from pipeline.models.adamixer.feature_space import FeatureSpace3D
from pipeline.models.adamixer.mask_head import MaskHead, paste
from pipeline.models.adamixer.set_loss import SetLossWeights, set_loss
from pipeline.models.adamixer.stage import DecoderStage
from pipeline.models.backbone import ResNetFeatures
from pipeline.supervision import as_supervision


@dataclass
class AdaMixerLoss(SetLossWeights):
    """AdaMixer's training loss as named terms and weights (`adamixer.loss`, built from its
    `_target_`): the set prediction loss of every stage (Sec. 3.4: focal class, L1 and GIoU on
    Hungarian matches, summed over stages) and the mask head's loss on the last stage's
    matches and the ground-truth boxes, from the supervision object (per-pixel or PointSup's
    points). Called as (model, decoded, sizes, targets)."""
    mask: float = 1.0

    def __call__(self, model, out: dict, sizes: torch.Tensor, targets: list[dict]) -> dict:
        whwh = sizes.flip(-1).repeat(1, 2).float()
        totals: dict = {}
        for s in out["stages"]:
            losses, matches = set_loss(s["logits"], s["boxes"], targets, whwh, self)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0) + v
        last = out["stages"][-1]["boxes"].detach()
        boxes = [torch.cat([last[i, q], t["boxes"].to(last.dtype)])
                 for i, ((q, m), t) in enumerate(zip(matches, targets))]
        objects = [torch.cat([m, torch.arange(len(t["labels"]), device=m.device)])
                   for (q, m), t in zip(matches, targets)]
        logits = model.mask_head(out["levels"], model.space.strides, boxes)
        totals["loss_mask"] = self.mask * model.supervision.roi_mask_loss(
            logits.float(), boxes, objects, targets)
        totals["loss"] = sum(totals.values())
        return totals


@dataclass
class InferenceParams:
    score_threshold: float = 0.0
    max_per_image: int = 100


class AdaMixer(nn.Module):
    def __init__(self, backbone: ResNetFeatures, num_classes: int = 1, num_queries: int = 100,
                 dim: int = 256, feat_dim: int = 256, stages: int = 6, heads: int = 8,
                 ffn_dim: int = 2048, groups: int = 4, in_points: int = 32,
                 out_points: int = 128, level_tau: float = 2.0, xy_unit: float = 1000.0,
                 mask_channels: int = 256, mask_convs: int = 4, roi_size: int = 14,
                 supervision="full", loss: AdaMixerLoss | None = None,
                 neck: str = "none"):
        super().__init__()
        self.backbone = backbone
        self.space = FeatureSpace3D(backbone.channels, feat_dim, neck=neck)
        self.content = nn.Embedding(num_queries, dim)
        self.stages = nn.ModuleList(
            DecoderStage(num_classes, dim, feat_dim, heads, ffn_dim, groups, in_points,
                         out_points, level_tau, xy_unit) for _ in range(stages))
        self.mask_head = MaskHead(feat_dim, num_classes, mask_channels, mask_convs, roi_size)
        self.supervision = as_supervision(supervision)   # the object, or its kind
        self.loss = loss or AdaMixerLoss()

    def decode(self, images: torch.Tensor, sizes: torch.Tensor) -> dict:
        """images (B, 3, H, W) normalised, padded; sizes (B, 2) each image's (h, w) ->
        {'stages': [{'logits' (B, N, K), 'boxes' (B, N, 4) xyxy}], 'levels': the space}."""
        levels = self.space(self.backbone(images))
        b, n = len(images), self.content.num_embeddings
        # the box state stays float32 under autocast: in bfloat16 a centre near 128 px moves
        # in 0.5-1 px steps and a small refinement step rounds away
        xyzr = whole_image_xyzr(sizes)[:, None].expand(b, n, 4).float()
        w = self.content.weight
        content = F.layer_norm(w, w.shape[-1:])[None].expand(b, -1, -1)
        outs = []
        for stage in self.stages:
            logits, xyzr, content = stage(content, xyzr, levels, self.space.strides)
            outs.append({"logits": logits, "boxes": xyzr_to_xyxy(xyzr)})
            xyzr = xyzr.detach()
        return {"stages": outs, "levels": levels}

    def forward(self, images, sizes, targets: list[dict] | None = None):
        out = self.decode(images, sizes)
        return out if targets is None else self.losses(out, sizes, targets)

    def losses(self, out: dict, sizes: torch.Tensor, targets: list[dict]) -> dict:
        """targets: per image 'labels' (M,) 0.., 'boxes' (M, 4) xyxy, and 'masks' (M, h, w)
        (full) or 'points' (M, P, 2) + 'point_labels' (M, P) (points). The set loss of every
        stage (summed over stages) and the mask loss of the last stage's matches."""
        return self.loss(self, out, sizes, targets)

    @torch.no_grad()
    def predict(self, out: dict, i: int, shape, p: InferenceParams):
        """Image i of a decoded batch -> (masks (K, 1, h, w) probabilities at `shape`,
        scores (K,), labels (K,) 0.., boxes (K, 4) xyxy): the top-scoring (query, class)
        pairs of the last stage, no NMS (one prediction per query and class)."""
        last = out["stages"][-1]
        prob = last["logits"][i].float().sigmoid()                       # (N, K)
        k = min(int(p.max_per_image), prob.numel())
        scores, idx = prob.flatten().topk(k)
        keep = scores > p.score_threshold
        scores, idx = scores[keep], idx[keep]
        labels, query = idx % prob.shape[1], idx // prob.shape[1]
        boxes = clip_boxes_to_image(last["boxes"][i, query].float(), tuple(shape))
        levels = [lv[i:i + 1] for lv in out["levels"]]
        logits = self.mask_head(levels, self.space.strides, [boxes.to(levels[0].dtype)])
        return paste(logits.float(), labels, boxes, shape), scores, labels, boxes

