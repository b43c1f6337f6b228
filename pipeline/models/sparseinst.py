"""SparseInst (Cheng et al., CVPR 2022): sparse instance activation maps, no boxes, no NMS.

An instance context encoder fuses res3-res5 into one stride-8 map; N instance activation
maps (IAM) each pick the pixels of one object; an instance's feature is its IAM-weighted
mean of the image features; a kernel from that feature dotted with a mask-feature map gives
its mask. One prediction per query, matched one-to-one to objects while training.

Supervision: full masks (dice + pixel BCE), or PointSup-style points with their box: the
mask logits are read at the points (bilinear, image coordinates, pixel centres), the mask's
projections onto the axes must match the box's (BoxInst's projection term), and every pixel
outside the box is background.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from pipeline.models.backbone import ResNetFeatures
from pipeline.models.losses import (colour_similarity, dice_loss, pairwise_affinity_loss,
                                    projection_dice_loss, rgb_to_lab)
from pipeline.models.solo import coord_channels

PRIOR = -math.log((1 - 0.01) / 0.01)  # logit of a 0.01 prior (focal-loss initialisation)


def conv_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling on the top level: context of the whole image (Sec. 3.3)."""

    def __init__(self, channels: int, sizes=(1, 2, 3, 6)):
        super().__init__()
        mid = max(1, channels // 4)
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s),
                                                  nn.Conv2d(channels, mid, 1)) for s in sizes)
        self.fuse = nn.Conv2d(channels + len(sizes) * mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(F.relu(s(x)), size=size, mode="bilinear", align_corners=False)
                  for s in self.stages]
        return F.relu(self.fuse(torch.cat([x, *pooled], 1)))


class InstanceContextEncoder(nn.Module):
    """res3-res5 -> one stride-8 map: pyramid pooling on res5, top-down fusion, then the
    three levels upsampled to stride 8 and fused (Sec. 3.3)."""

    def __init__(self, in_channels: dict, channels: int):
        super().__init__()
        self.names = ("res3", "res4", "res5")
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[n], channels, 1) for n in self.names)
        self.ppm = PyramidPooling(channels)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1)
                                    for _ in self.names)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)

    def forward(self, feats: dict) -> torch.Tensor:
        lat = [conv(feats[n]) for conv, n in zip(self.lateral, self.names)]
        top = self.ppm(lat[2])
        levels = [top]
        for x in (lat[1], lat[0]):     # top-down: res4, then res3
            top = x + F.interpolate(top, size=x.shape[-2:], mode="nearest")
            levels.insert(0, top)
        size = levels[0].shape[-2:]
        outs = [F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
                if i else conv(x) for i, (conv, x) in enumerate(zip(self.smooth, levels))]
        return self.fuse(torch.cat(outs, 1))


class IAMDecoder(nn.Module):
    """Instance branch with group IAM (Sec. 3.4): N*G sigmoid activation maps, the
    IAM-weighted mean of the instance features per map, the G group features of a query
    concatenated and projected; class, kernel and objectness heads; a mask branch with
    coordinate features (CoordConv) whose map the kernels are dotted with."""

    def __init__(self, channels: int, dim: int, num_queries: int, num_classes: int,
                 kernel_dim: int, convs: int = 4, groups: int = 4, group_fc: str = "expand"):
        """group_fc: `expand` (released GroupIAMDecoder: the G concatenated group features
        through Linear(G*dim, G*dim), the heads on G*dim) or `project` (Linear(G*dim, dim),
        the heads on dim: fewer weights)."""
        super().__init__()
        if group_fc not in ("expand", "project"):
            raise ValueError(f"sparseinst.group_fc={group_fc!r}: use expand or project")
        self.n, self.g = num_queries, groups
        self.inst_branch = nn.Sequential(*[conv_relu(channels + 2 if i == 0 else dim, dim)
                                           for i in range(convs)])
        self.iam = nn.Conv2d(dim, num_queries * groups, 3, padding=1, groups=groups)
        head = dim * groups if group_fc == "expand" else dim
        self.project = nn.Linear(dim * groups, head)
        self.cls = nn.Linear(head, num_classes)
        self.kernel = nn.Linear(head, kernel_dim)
        self.objectness = nn.Linear(head, 1)
        self.mask_branch = nn.Sequential(*[conv_relu(channels + 2 if i == 0 else dim, dim)
                                           for i in range(convs)],
                                         nn.Conv2d(dim, kernel_dim, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.iam.weight, std=0.01)
        nn.init.constant_(self.iam.bias, PRIOR)   # every map starts near-empty (p = 0.01)
        nn.init.constant_(self.cls.bias, PRIOR)
        nn.init.normal_(self.kernel.weight, std=0.01)
        nn.init.zeros_(self.kernel.bias)

    def forward(self, x: torch.Tensor) -> dict:
        x = torch.cat([x, coord_channels(x)], 1)
        inst = self.inst_branch(x)
        b, d = inst.shape[:2]
        iam = self.iam(inst)                                          # (B, N*G, H, W)
        feats = iam_features(iam, inst)                               # (B, N*G, D)
        feats = feats.view(b, self.g, self.n, d).transpose(1, 2).reshape(b, self.n, self.g * d)
        feats = F.relu(self.project(feats))                    # (B, N, G*D) or (B, N, D)
        mask_feat = self.mask_branch(x)                               # (B, K, H, W)
        masks = torch.einsum("bnk,bkhw->bnhw", self.kernel(feats), mask_feat)
        return {"logits": self.cls(feats), "objectness": self.objectness(feats)[..., 0],
                "masks": masks, "iam": iam}


def iam_features(iam_logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) activation logits, (B, D, H, W) features -> (B, M, D): each map's
    sigmoid activations normalised to sum 1 over the image, so an instance feature is a
    weighted mean of the pixels its map selects (Sec. 3.2, Eq. 1)."""
    prob = iam_logits.sigmoid().flatten(2)                                    # (B, M, HW)
    prob = prob / prob.sum(-1, keepdim=True).clamp(min=1e-6)
    return torch.bmm(prob, features.flatten(2).transpose(1, 2))


class SparseInst(nn.Module):
    """Backbone -> instance context encoder (stride 8) -> IAM decoder; masks are returned
    at stride 4 (the decoder's stride-8 masks upsampled 2x, as released)."""

    def __init__(self, backbone: ResNetFeatures, num_classes: int = 1, channels: int = 256,
                 dim: int = 256, num_queries: int = 100, kernel_dim: int = 128,
                 convs: int = 4, groups: int = 4, group_fc: str = "expand"):
        super().__init__()
        self.backbone = backbone
        self.encoder = InstanceContextEncoder(backbone.channels, channels)
        self.decoder = IAMDecoder(channels, dim, num_queries, num_classes, kernel_dim, convs,
                                  groups, group_fc)

    def forward(self, images: torch.Tensor) -> dict:
        out = self.decoder(self.encoder(self.backbone(images)))
        out["masks"] = F.interpolate(out["masks"], scale_factor=2, mode="bilinear",
                                     align_corners=False)
        return out


# ---------------------------------------------------------------- training (Sec. 3.5)

@dataclass
class SparseInstLoss:
    """SparseInst's training loss as named terms and their weights (`sparseinst.loss`, built
    from its `_target_`), called as (out, samples, padded_hw, supervision, images)."""
    cls: float = 2.0
    dice: float = 2.0
    bce: float = 5.0
    objectness: float = 1.0
    match_alpha: float = 0.8          # matching score p_cls^(1-a) * mask_score^a
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    outside_box: float = 1.0          # points: pixels outside the instance's box are background
    box_projection: float = 2.0       # points: mask projections match the box's (BoxInst)
    pairwise: float = 0.0             # points: like-coloured neighbours share a label (BoxInst)
    pairwise_threshold: float = 0.3
    match_dice: str = "squared"       # matching dice: 2 sum(pt) / (sum p^2 + sum t^2) (released
                                      # loss.py dice_score); "plain": / (sum p + sum t)
    objectness_threshold: float = 0.4  # a predicted pixel counts for the objectness IoU target
                                      # at probability >= this (released compute_mask_iou)
    drop_loss_iou: float = 0.0        # > 0: CutLER's DropLoss: unmatched queries whose mask
                                      # overlaps no target by more than this IoU get no
                                      # classification loss (pseudo-labels miss objects)

    def __call__(self, out, samples, padded_hw, supervision, images=None) -> dict:
        return sparseinst_loss(out, samples, padded_hw, self, supervision, images)


def sample_at_points(logits: torch.Tensor, points: torch.Tensor, image_hw) -> torch.Tensor:
    """Read (Q, h, w) mask logits at image points (P, K, 2) (x, y in input pixels, pixel
    centres at +0.5) -> (Q, P, K). The logits cover the padded input (image_hw) at a lower
    resolution; coordinates are normalised by that size, align_corners=False, as the
    PointSup mask head reads its RoI masks."""
    hp, wp = image_hw
    scale = points.new_tensor([wp, hp])
    grid = (points / scale * 2 - 1).reshape(1, -1, 1, 2).expand(len(logits), -1, -1, -1)
    out = F.grid_sample(logits[:, None], grid, mode="bilinear", align_corners=False)
    return out[:, 0, :, 0].view(len(logits), *points.shape[:2])


def point_agreement(prob_at: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(Q, P, K) probabilities at the points, (P, K) labels {1, 0, -1} -> (Q, P): mean over
    an instance's labelled points of p (object points) or 1 - p (background points): the
    point analogue of the dice score used for matching."""
    valid = (labels >= 0).float()
    agree = torch.where(labels == 1, prob_at, 1 - prob_at) * valid
    return agree.sum(-1) / valid.sum(-1).clamp(min=1)


def point_iou(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(P, K) binary predictions at points, (P, K) labels -> (P,) IoU estimated on the
    points: the objectness target when only points are known."""
    valid = labels >= 0
    obj = (labels == 1) & valid
    inter = (pred & obj).sum(-1).float()
    union = ((pred & valid) | obj).sum(-1).float()
    return inter / union.clamp(min=1)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(P, HW) binary, (P, HW) binary -> (P,) IoU: the objectness target (Sec. 3.5)."""
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return inter / union.clamp(min=1)


def dice_score_matrix(prob: torch.Tensor, target: torch.Tensor,
                      squared: bool = False) -> torch.Tensor:
    """(Q, HW), (M, HW) -> (Q, M) dice coefficients: 2 sum(p t) / (sum p + sum t), or with
    squared sums in the denominator (sum p^2 + sum t^2, the released matcher's)."""
    inter = prob @ target.T
    if squared:
        return 2 * inter / ((prob * prob).sum(-1)[:, None] + (target * target).sum(-1)[None]
                            + 1e-4)
    return 2 * inter / (prob.sum(-1)[:, None] + target.sum(-1)[None] + 1e-5)


@torch.no_grad()
def hungarian_match(cls_prob: torch.Tensor, mask_score: torch.Tensor,
                    alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per object maximising p_cls^(1-a) * mask_score^a (Sec. 3.5).
    cls_prob, mask_score: (Q, M) -> (query indices, object indices)."""
    score = cls_prob.clamp(min=0) ** (1 - alpha) * mask_score.clamp(min=0) ** alpha
    rows, cols = linear_sum_assignment(score.float().cpu().numpy(), maximize=True)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def sparseinst_loss(out: dict, samples: list[dict], padded_hw, w: SparseInstLoss,
                    supervision="full", images: torch.Tensor | None = None) -> dict:
    """Matching and losses for a batch (Sec. 3.5). samples: 'labels' (M,) and what the
    supervision object reads: 'masks' (M, h, w) bool at input size (full masks) or 'points'
    (M, K, 2), 'point_labels' (M, K), 'boxes' (M, 4) (points). The supervision object (or its
    kind, for code built outside a config) matches the queries and gives their mask terms and
    objectness targets. images: the padded RGB batch in [0, 255], for the pairwise term."""
    from pipeline.supervision import as_supervision
    supervision = as_supervision(supervision)
    logits, obj, masks = out["logits"], out["objectness"], out["masks"]
    device = masks.device
    cls_target = torch.zeros_like(logits)
    cls_weight = torch.ones_like(logits)      # DropLoss zeroes the rows of dropped queries
    mask_terms, obj_pred, obj_target = [], [], []
    num = 0
    for i, s in enumerate(samples):
        m = len(s["labels"])
        if m == 0:
            continue
        num += m
        labels = s["labels"].to(device)
        prob_cls = logits[i].sigmoid()[:, labels]                                 # (Q, M)
        image = images[i] if images is not None else None
        q, t, term, iou, drop = supervision.dense_mask_terms(masks[i], s, prob_cls, padded_hw,
                                                             w, image)
        if drop is not None:
            cls_weight[i, drop] = 0.0
        mask_terms.append(term)
        cls_target[i, q, labels[t]] = 1.0
        obj_pred.append(obj[i, q])
        obj_target.append(iou)
    norm = max(num, 1)
    losses = {"loss_cls": w.cls * (sigmoid_focal_loss(
        logits, cls_target, alpha=w.focal_alpha, gamma=w.focal_gamma, reduction="none")
        * cls_weight).sum() / norm}
    if mask_terms:
        losses["loss_mask"] = torch.cat(mask_terms).mean()
        losses["loss_objectness"] = w.objectness * F.binary_cross_entropy_with_logits(
            torch.cat(obj_pred), torch.cat(obj_target))
    else:
        zero = masks.sum() * 0
        losses["loss_mask"], losses["loss_objectness"] = zero, zero
    losses["loss"] = sum(losses.values())
    return losses


def full_mask_terms(pred_masks, s, prob_cls, padded_hw, w, image=None):
    """Full masks: queries matched by p_cls^(1-a) * dice^a, dice + pixel BCE on the matched
    masks, objectness towards their mask IoU (Sec. 3.5); DropLoss's unmatched queries.
    pred_masks (Q, h, w) logits of one image -> (q, t, term (P,), iou (P,), drop (Q,) | None)."""
    device = pred_masks.device
    hm, wm = pred_masks.shape[-2:]
    hp, wp = padded_hw
    m = len(s["labels"])
    tgt = torch.zeros((m, hp, wp), dtype=torch.float32, device=device)
    tgt[:, :s["masks"].shape[1], :s["masks"].shape[2]] = s["masks"].to(device).float()
    tgt = F.interpolate(tgt[None], size=(hm, wm), mode="bilinear",
                        align_corners=False)[0].flatten(1)                         # (M, hw)
    pred = pred_masks.flatten(1)
    q, t = hungarian_match(prob_cls, dice_score_matrix(
        pred.detach().sigmoid(), tgt, squared=w.match_dice == "squared"), w.match_alpha)
    q, t = q.to(device), t.to(device)
    p, g = pred[q], tgt[t]
    term = w.dice * dice_loss(p.sigmoid(), g) + w.bce * F.binary_cross_entropy_with_logits(
        p, g, reduction="none").mean(-1)
    iou = mask_iou(p.detach().sigmoid() >= w.objectness_threshold, g > 0.5)
    drop = (drop_mask(pred.detach().sigmoid() >= 0.5, tgt > 0.5, q, w.drop_loss_iou)
            if w.drop_loss_iou > 0 else None)
    return q, t, term, iou, drop


def point_mask_terms(pred_masks, s, prob_cls, padded_hw, w, image=None):
    """Points and their box (our design, after PointSup and BoxInst): queries matched by
    their agreement with the points times the box-projection dice; BCE at the points, the
    projection term, background outside the box, optionally BoxInst's pairwise term;
    objectness towards the IoU estimated on the points times the share inside the box.
    pred_masks (Q, h, w) logits of one image -> (q, t, term (P,), iou (P,), None)."""
    device = pred_masks.device
    hm, wm = pred_masks.shape[-2:]
    hp, wp = padded_hw
    pts, lab = s["points"].to(device), s["point_labels"].to(device)
    at = sample_at_points(pred_masks, pts, (hp, wp))                               # (Q, M, K)
    box = s["boxes"].to(device) * torch.tensor(
        [wm / wp, hm / hp, wm / wp, hm / hp], device=device)                # in mask cells
    inside = box_masks(box, hm, wm)                                                # (M, h, w)
    prob = pred_masks.detach().sigmoid()
    # a query fits an object when it agrees with its points and fills its box
    score = point_agreement(at.detach().sigmoid(), lab)
    if w.box_projection:
        score = score * projection_score_matrix(prob, inside)
    q, t = hungarian_match(prob_cls, score, w.match_alpha)
    q, t = q.to(device), t.to(device)
    at = at[q, t]                                                                  # (P, K)
    lt = lab[t]
    valid = (lt >= 0).float()
    point_term = (F.binary_cross_entropy_with_logits(
        at, lt.clamp(min=0).float(), reduction="none") * valid).sum(-1) \
        / valid.sum(-1).clamp(min=1)
    term = w.bce * point_term
    if w.box_projection:
        term = term + w.box_projection * projection_dice_loss(pred_masks[q].sigmoid(), inside[t])
    if w.outside_box:
        term = term + w.outside_box * outside_box_loss(pred_masks[q], inside[t])
    if w.pairwise and image is not None:
        sim, ok = colour_edges(image, s["image"].shape[-2:], (hm, wm))
        term = term + w.pairwise * pairwise_affinity_loss(
            pred_masks[q], sim.expand(len(q), -1, -1, -1), inside[t] & ok,
            w.pairwise_threshold, neighbour_ok=ok.expand(len(q), -1, -1))
    # IoU estimated on the points, discounted by the share of the mask outside the box
    binary = prob[q] > 0.5
    in_box = (binary & inside[t]).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)
    iou = point_iou(at.detach().sigmoid() > 0.5, lt) * in_box
    return q, t, term, iou, None


def drop_mask(pred: torch.Tensor, target: torch.Tensor, matched: torch.Tensor,
              iou: float) -> torch.Tensor:
    """CutLER's DropLoss (Wang et al., CVPR 2023, Sec. 3.2, Eq. 2) for query-based models:
    (Q, HW) binary predictions, (M, HW) binary targets, matched query indices -> (Q,) bool,
    True for the unmatched queries whose mask overlaps every target by IoU <= `iou`: they
    may have found an object the pseudo-labels miss, so they are not pushed to background."""
    p, t = pred.float(), target.float()
    inter = p @ t.T
    union = p.sum(-1)[:, None] + t.sum(-1)[None] - inter
    best = (inter / union.clamp(min=1)).amax(-1) if len(t) else p.new_zeros(len(p))
    drop = best <= iou
    drop[matched] = False
    return drop


def colour_edges(image: torch.Tensor, image_hw, mask_hw):
    """Colour similarity of each mask cell to its 8 dilated neighbours (Lab, on the image
    pooled to the mask's stride, as BoxInst computes it) and the cells inside the unpadded
    image: (1, 8, h, w), (1, h, w)."""
    stride = image.shape[-1] // mask_hw[1]
    small = F.avg_pool2d(image[None].float(), stride, stride)
    valid = torch.zeros(mask_hw, dtype=torch.bool, device=image.device)
    valid[:image_hw[0] // stride, :image_hw[1] // stride] = True
    return colour_similarity(rgb_to_lab(small)), valid[None]


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(P, 4) boxes in cells -> (P, h, w) bool: cells that overlap the box (so a box smaller
    than a cell still has one, and no cell with object pixels is called background)."""
    yy = torch.arange(h, device=boxes.device).view(1, -1, 1)
    xx = torch.arange(w, device=boxes.device).view(1, 1, -1)
    return ((xx + 1 > boxes[:, 0, None, None]) & (xx < boxes[:, 2, None, None])
            & (yy + 1 > boxes[:, 1, None, None]) & (yy < boxes[:, 3, None, None]))


def projection_score_matrix(prob: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(Q, h, w) probabilities, (M, h, w) box masks -> (Q, M): mean of the dice coefficients
    of the max projections onto x and y, the matching analogue of the projection loss."""
    t = inside.float()
    px = dice_score_matrix(prob.amax(1), t.amax(1))
    py = dice_score_matrix(prob.amax(2), t.amax(2))
    return (px + py) / 2


def outside_box_loss(logits: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(P, h, w) mask logits, (P, h, w) box masks -> (P,) mean BCE towards 0 over the cells
    outside the box: what the box of a point annotation says."""
    outside = (~inside).float()
    bce = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits),
                                             reduction="none")
    return (bce * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp(min=1)


# ---------------------------------------------------------------- inference (Sec. 3.6)

@dataclass
class InferenceParams:
    score_threshold: float = 0.005
    mask_threshold: float = 0.45
    max_per_image: int = 100
    rescore: str = "maskness"     # released: score x mean probability inside the binary mask;
                                  # "none": sqrt(p_class * p_objectness) only


def maskness(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K, h, w) mask probabilities -> (K,) mean probability of the pixels above threshold
    (0 for an empty mask): how sure a mask is of its own pixels."""
    binary = (prob > threshold).float()
    return (prob * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)


@torch.no_grad()
def sparseinst_predict(out: dict, i: int, p: InferenceParams):
    """Image i of a batch: (mask logits (K, h, w) at stride 4, scores (K,), labels (K,)).
    score = sqrt(p_class * p_objectness), then x maskness (the released inference's
    rescoring, on the stride-4 masks) unless p.rescore == "none"; no NMS: each query is one
    instance."""
    prob = out["logits"][i].sigmoid()
    scores, labels = prob.max(-1)
    scores = (scores * out["objectness"][i].sigmoid()).sqrt()
    keep = scores > p.score_threshold
    scores, labels, masks = scores[keep], labels[keep], out["masks"][i][keep]
    if p.rescore == "maskness":
        scores = scores * maskness(masks.sigmoid(), p.mask_threshold)
    elif p.rescore != "none":
        raise ValueError(f"sparseinst.inference.rescore={p.rescore!r}: use maskness or none")
    order = scores.argsort(descending=True)[:p.max_per_image]
    return masks[order], scores[order], labels[order]

