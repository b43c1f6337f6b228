"""Mask Transfiner's refiner and Mask R-CNN + refiner, by composition (Ke et al., CVPR 2022).

`TransfinerRefiner` takes the coarse 28 x 28 masks of a set of RoIs with the FPN features and
returns 112 x 112 masks in which only the incoherent quadtree nodes changed (Sec. 3).
`TransfinerMaskRCNN` holds torchvision's Mask R-CNN (built by `build_maskrcnn`) and a refiner
and runs the detector's own parts in GeneralizedRCNN's order, adding the refiner's losses
in training and refining the detections' masks before they are pasted into the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.params import dataclass_from
from pipeline.models.transfiner import quadtree
from pipeline.models.transfiner.incoherence import (IncoherenceDetector, coverage_fraction,
                                                    downsample, incoherence_targets)
from pipeline.models.transfiner.losses import (detection_loss, point_refinement_loss,
                                               refinement_loss)
from pipeline.models.transfiner.nodes import NodeEncoder, coarse_at, roi_colours
from pipeline.models.transfiner.sequence import PixelDecoder, SequenceEncoder


@dataclass
class TransfinerParams:
    sizes: tuple = (28, 56, 112)   # quadtree levels: depth 3, the paper's choice (Sec. 4.3)
    dim: int = 256                 # node token width
    layers: int = 3                # sequence encoder depth D (paper default 3)
    heads: int = 4                 # attention heads H (paper default 4)
    detector_width: int = 64       # incoherence detector's FCN width
    threshold: float = 0.5         # incoherence probability that makes a node / a split
    select: str = "threshold"      # inference: "threshold", or "expected" (the project's)
    max_nodes: int = 0             # > 0: at most this many roots / splits per RoI and level
    train_rois: int = 0            # > 0: refiner trained on at most this many positives a batch
    min_score: float = 0.0         # detections below this score keep their coarse mask
    pixels: bool = False           # nodes also read the input image (the project's addition)
    residual: bool = False         # node logit = coarse logit + decoder's (the project's)
    contrast: bool = False         # nodes compare their pixels with the RoI's colours (ours)
    dilate: int = 0                # root nodes: the incoherent cells grown by this many (ours)
    train_nodes: str = "targets"   # training quadtree: "targets" (paper) or "detected" (ours)
    node_labels: str = "majority"  # full masks: a node's label, "majority" or "fraction" (ours)
    detect_weight: float = 1.0     # L_detect
    detect_balanced: bool = False  # L_detect's positives weighted by negatives / positives
    refine_weight: float = 1.0     # L_refine

    @classmethod
    def from_config(cls, node) -> "TransfinerParams":
        loss = node.get("loss") or {}
        return dataclass_from(cls, node, **{f"{k}_weight": float(v) for k, v in loss.items()})


class TransfinerRefiner(nn.Module):
    def __init__(self, channels: int, p: TransfinerParams):
        super().__init__()
        self.p = p
        self.detector = IncoherenceDetector(channels, p.detector_width)
        self.encoder = NodeEncoder(channels, p.dim, len(p.sizes), p.pixels, p.contrast)
        # Sec. 3.2: incoherence of the inner levels' nodes, guided by the root detection
        self.split_head = nn.Linear(p.dim, 1)
        self.sequence = SequenceEncoder(p.dim, p.layers, p.heads)
        self.decoder = PixelDecoder(p.dim, zero_init=p.residual)

    def incoherent(self, logits: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """Inference: which cells (root grid or inner nodes, `roi` their RoI) are incoherent.
        "threshold" (the paper): probability >= threshold. "expected" (the project's
        design): per RoI, the round(sum of probabilities) most probable, i.e. as many cells
        as the detector expects, in its order, however low an undertrained detector scores
        them."""
        probs = logits.sigmoid()
        if self.p.select == "threshold":
            return probs >= self.p.threshold
        return quadtree.expected_top(probs.flatten(), roi.flatten()).view_as(probs)

    def forward(self, features, image_of_roi, boxes, roi_features, coarse, incoherent=None):
        """coarse (R, S0, S0) mask probabilities of RoIs `boxes` (R, 4, image coordinates) of
        images `image_of_roi` (R,); incoherent: per level (R, S, S) bool targets (training);
        they build the quadtree when `train_nodes` is "targets", else the detector's
        predictions do. -> dict with root_logits, nodes (N, 4), split_logits (N,), logits (N,),
        masks (R, M, M) probabilities."""
        p, sizes = self.p, self.p.sizes
        root_logits = self.detector(roi_features, coarse)
        # the quadtree trains on the targets' nodes (the paper) or, like inference, on the
        # detector's ("detected"): a widened band of the targets centres on the true contour
        # and so tells a node's label by its place in the set
        targets = incoherent if p.train_nodes == "targets" else None
        if targets is not None:
            root_map = targets[0]
        else:
            rois = torch.arange(len(boxes), device=boxes.device)[:, None, None]
            root_map = self.incoherent(root_logits.detach(), rois.expand_as(root_logits))
        if p.dilate > 0:  # the band widened: coarse masks err further than one cell
            root_map = quadtree.dilate(root_map, p.dilate)
        nodes = quadtree.roots(root_map, p.max_nodes, root_logits)
        colours = roi_colours(features["image"], image_of_roi, boxes, coarse) \
            if p.contrast else None
        levels, tokens, splits, priors = [], [], [], []
        for level in range(len(sizes)):
            c = coarse_at(coarse, nodes, sizes)
            t = self.encoder(features, image_of_roi, boxes, nodes, c, sizes, colours)
            s = self.split_head(t)[:, 0]
            levels.append(nodes), tokens.append(t), splits.append(s), priors.append(c)
            if level + 1 == len(sizes):
                break
            if level == 0:
                keep = torch.ones(len(nodes), dtype=torch.bool, device=nodes.device)
            elif targets is not None:
                keep = targets[level][nodes[:, 0], nodes[:, 2], nodes[:, 3]]
            else:
                keep = self.incoherent(s, nodes[:, 0])
            parents = nodes[keep]
            if p.max_nodes > 0 and level > 0:
                parents = quadtree.cap_per_roi(parents, s[keep].detach(), p.max_nodes)
            nodes = quadtree.children(parents)
        nodes, tokens, splits = torch.cat(levels), torch.cat(tokens), torch.cat(splits)
        logits = self.decoder(self.sequence(tokens, nodes[:, 0]))
        if p.residual:  # a correction of the coarse mask at the node: 0 leaves it as it is
            logits = logits + torch.logit(torch.cat(priors), eps=1e-4)
        m = sizes[-1]
        base = F.interpolate(coarse[:, None], size=(m, m), mode="bilinear",
                             align_corners=False)[:, 0]
        masks = quadtree.paint(base, nodes, logits.sigmoid(), sizes)
        return {"root_logits": root_logits, "nodes": nodes, "split_logits": splits,
                "logits": logits, "masks": masks}


def transfiner_losses(refiner, features, image_of_roi, boxes, roi_features, coarse, fine=None,
                      points=None, point_labels=None) -> dict:
    """L_detect and L_refine (Sec. 3.5, weighted) of RoIs `boxes` (R, 4) with coarse masks
    (R, S0, S0). Full masks: `fine` (R, 2M, 2M) bool, the ground truth one level finer than the
    finest node, gives the incoherence targets and the nodes' labels. Points (the project's
    design): incoherence targets from the coarse mask resized to 2M, refinement loss at the
    labelled points (R, K, 2) / (R, K) that fall in incoherent nodes."""
    p, sizes = refiner.p, refiner.p.sizes
    if fine is None:
        size = 2 * sizes[-1]
        fine = F.interpolate(coarse[:, None].detach(), size=(size, size), mode="bilinear",
                             align_corners=False)[:, 0] >= 0.5
    incoherent = incoherence_targets(fine, sizes)
    out = refiner(features, image_of_roi, boxes, roi_features, coarse, incoherent)
    nodes, inner = out["nodes"], out["nodes"][:, 1] > 0
    split_targets = torch.zeros(len(nodes), dtype=torch.bool, device=boxes.device)
    for lv in range(1, len(sizes)):  # inner nodes: incoherent at their own level?
        sel = nodes[:, 1] == lv
        split_targets[sel] = incoherent[lv][nodes[sel, 0], nodes[sel, 2], nodes[sel, 3]]
    l_detect = detection_loss(out["root_logits"], incoherent[0], out["split_logits"][inner],
                              split_targets[inner], balanced=p.detect_balanced)
    if points is None:
        node_labels = torch.zeros(len(nodes), device=boxes.device)
        for lv, s in enumerate(sizes):
            sel = nodes[:, 1] == lv
            label = downsample(fine, s) if p.node_labels == "majority" else \
                coverage_fraction(fine, s)
            node_labels[sel] = label[nodes[sel, 0], nodes[sel, 2], nodes[sel, 3]].float()
        l_refine = refinement_loss(out["logits"], node_labels)
    else:
        cover = quadtree.coverage(nodes, len(boxes), sizes)
        l_refine = point_refinement_loss(out["logits"], cover, boxes, points, point_labels)
    return {"loss_incoherence": p.detect_weight * l_detect,
            "loss_refine": p.refine_weight * l_refine}


def _cat_boxes(boxes):
    image_of_roi = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=b.device)
                              for i, b in enumerate(boxes)])
    return image_of_roi, torch.cat(boxes)


class TransfinerMaskRCNN(nn.Module):
    """torchvision's Mask R-CNN + Mask Transfiner's refiner (L = L_detect + L_coarse +
    L_refine, Sec. 3.5). Under `supervision="points"` the refinement is trained at the
    labelled points that fall in incoherent nodes and the incoherence targets come from the
    coarse mask (the project's design; the paper trains on full masks)."""

    def __init__(self, maskrcnn: nn.Module, params: TransfinerParams, channels: int,
                 supervision="full"):
        super().__init__()
        from pipeline.supervision import as_supervision
        self.maskrcnn, self.p = maskrcnn, params
        self.supervision = as_supervision(supervision)
        self.refiner = TransfinerRefiner(channels, params)

    def forward(self, images, targets=None):
        m = self.maskrcnn
        original = [tuple(img.shape[-2:]) for img in images]
        batch, targets = m.transform(images, targets)
        features = m.backbone(batch.tensors)
        proposals, rpn_losses = m.rpn(batch, features, targets)
        dets, det_losses = m.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.p.pixels or self.p.contrast:  # the nodes read the input image too (stride 1)
            features = dict(features, image=batch.tensors)
        if self.training:
            losses = {**rpn_losses, **det_losses}
            losses.update(self.refine_losses(features, batch.image_sizes, targets))
            return losses
        dets = self.refine(features, batch.image_sizes, dets)
        return m.transform.postprocess(dets, batch.image_sizes, original)

    def _coarse(self, features, boxes, image_sizes, classes):
        heads = self.maskrcnn.roi_heads
        roi_features = heads.mask_roi_pool(features, boxes, image_sizes)
        with torch.no_grad():  # the coarse mask is an input here; L_coarse trains it
            logits = heads.mask_predictor(heads.mask_head(roi_features))
        coarse = logits[torch.arange(len(classes), device=logits.device), classes].sigmoid()
        return roi_features, coarse

    def refine_losses(self, features, image_sizes, targets) -> dict:
        p = self.p
        props, matched, labels, _ = self.maskrcnn.roi_heads._samples  # torchvision's sample
        pos = [torch.nonzero(lab > 0, as_tuple=True)[0] for lab in labels]
        if p.train_rois > 0:
            n = sum(len(i) for i in pos)
            if n > p.train_rois:
                keep = torch.randperm(n, device=pos[0].device)[:p.train_rois]
                flags = torch.zeros(n, dtype=torch.bool, device=keep.device)
                flags[keep] = True
                pos = [i[f] for i, f in zip(pos, torch.split(flags, [len(i) for i in pos]))]
        boxes = [pr[i] for pr, i in zip(props, pos)]
        gt_idx = [mt[i] for mt, i in zip(matched, pos)]
        classes = torch.cat([lab[i] for lab, i in zip(labels, pos)])
        image_of_roi, flat = _cat_boxes(boxes)
        zero = sum(q.sum() for q in self.refiner.parameters()) * 0  # a path to every weight
        if len(flat) == 0:
            return {"loss_incoherence": zero, "loss_refine": zero}
        roi_features, coarse = self._coarse(features, boxes, image_sizes, classes)
        # full masks: the masks one level finer than the finest node; points: the points
        t = self.supervision.roi_targets(targets, gt_idx, boxes, 2 * self.p.sizes[-1])
        return transfiner_losses(self.refiner, features, image_of_roi, flat, roi_features, coarse,
                                 t.get("masks"), t.get("points"), t.get("point_labels"))

    @torch.no_grad()
    def refine(self, features, image_sizes, dets) -> list[dict]:
        """Each detection's 28 x 28 mask -> 112 x 112 (refined at incoherent nodes); those
        below min_score get the coarse mask resized."""
        m = self.p.sizes[-1]
        chosen = [torch.nonzero(d["scores"] >= self.p.min_score, as_tuple=True)[0] for d in dets]
        # the coarse masks torchvision kept (probabilities of each detection's class)
        coarse = [d["masks"][i, 0] for d, i in zip(dets, chosen)]
        for d in dets:
            d["masks"] = F.interpolate(d["masks"], size=(m, m), mode="bilinear",
                                       align_corners=False) if len(d["masks"]) else \
                d["masks"].new_zeros((0, 1, m, m))
        boxes = [d["boxes"][i] for d, i in zip(dets, chosen)]
        if sum(len(b) for b in boxes) == 0:
            return dets
        roi_features = self.maskrcnn.roi_heads.mask_roi_pool(features, boxes, image_sizes)
        coarse = torch.cat(coarse)
        image_of_roi, flat = _cat_boxes(boxes)
        out = self.refiner(features, image_of_roi, flat, roi_features, coarse)
        refined = torch.split(out["masks"], [len(b) for b in boxes])
        for d, i, r in zip(dets, chosen, refined):
            d["masks"][i] = r[:, None].to(d["masks"])
        return dets

    @torch.no_grad()
    def refine_given(self, images, boxes, coarse) -> list[torch.Tensor]:
        """The refiner alone on masks from elsewhere (stage=refine): images (3, h, w) in
        [0, 1], boxes per image (K, 4) at that size, coarse per image (K, S0, S0) mask
        probabilities -> per image (K, M, M) refined masks."""
        m = self.maskrcnn
        batch, _ = m.transform(images)
        features = m.backbone(batch.tensors)
        if self.p.pixels or self.p.contrast:
            features = dict(features, image=batch.tensors)
        dets = [{"boxes": b, "scores": torch.ones(len(b), device=b.device), "masks": c[:, None]}
                for b, c in zip(boxes, coarse)]
        dets = self.refine(features, batch.image_sizes, dets)  # score 1 >= any min_score
        return [d["masks"][:, 0] for d in dets]
