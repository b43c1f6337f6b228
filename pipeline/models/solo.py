"""SOLOv2 (Wang et al., NeurIPS 2020) on the project's ResNet + FPN, with FreeSOLO's weak losses.

Grid cells of several FPN levels predict a category score and a dynamic 1x1 kernel; each
kernel convolved with one unified mask-feature map gives that cell's instance mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from pipeline.models.backbone import ResNetFeatures, build_backbone
from pipeline.models.fpn import BackboneFPN
from pipeline.models.losses import (colour_similarity, dice_loss, embedding_loss,
                                    pairwise_affinity_loss, projection_dice_loss, rgb_to_lab)
from pipeline.ops.matrix_nms import matrix_nms
from pipeline.ops.precision import full_precision, to_float32


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """Two channels of normalised x, y coordinates in [-1, 1] (CoordConv, SOLO Sec. 3.2)."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].expand(b, -1, -1, -1)


def conv_gn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.GroupNorm(min(32, cout // 4), cout), nn.ReLU(inplace=True))


@dataclass
class Level:
    feature: str        # p2..p6
    grid: int           # S: cells per side
    stride: int         # nominal stride: masks of fewer pixels (at stride 4) are dropped
    scale: tuple        # instance sqrt(box area) range, input pixels


class MaskFeatureBranch(nn.Module):
    """Unified mask features at stride 4 from P2..P5 (SOLOv2 Sec. 3.2.2)."""

    def __init__(self, cin: int, mid: int, out: int):
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(4):
            layers, ch = [], cin + (2 if i == 3 else 0)
            for j in range(max(1, i)):
                layers.append(conv_gn(ch, mid))
                ch = mid
                if i > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear",
                                              align_corners=False))
            self.levels.append(nn.Sequential(*layers))
        self.out = nn.Sequential(nn.Conv2d(mid, out, 1, bias=False),
                                 nn.GroupNorm(min(32, out // 4), out), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.levels[0](feats[0])
        for i in range(1, 4):
            f = feats[i]
            if i == 3:
                f = torch.cat([f, coord_channels(f)], 1)
            y = self.levels[i](f)
            x = x + y[..., :x.shape[-2], :x.shape[-1]]
        return self.out(x)


class SOLOv2(nn.Module):
    def __init__(self, backbone: ResNetFeatures, levels: list[Level], num_classes: int = 1,
                 fpn_channels: int = 256, head_channels: int = 256, head_convs: int = 4,
                 mask_channels: int = 256, embedding_dim: int = 0,
                 mask_branch_channels: int = 128, split_feats: bool = True):
        """split_feats: SOLOv2's released head input: P2 halved and P6 resized to P5's size
        before each level is resized to its grid (false: every level resized directly)."""
        super().__init__()
        self.levels, self.num_classes, self.split_feats = levels, num_classes, split_feats
        self.features = BackboneFPN(backbone, fpn_channels)
        self.cate_tower = nn.Sequential(*[conv_gn(fpn_channels if i == 0 else head_channels,
                                                  head_channels) for i in range(head_convs)])
        self.kernel_tower = nn.Sequential(*[conv_gn(fpn_channels + 2 if i == 0 else head_channels,
                                                    head_channels) for i in range(head_convs)])
        self.cate_out = nn.Conv2d(head_channels, num_classes, 3, padding=1)
        self.kernel_out = nn.Conv2d(head_channels, mask_channels, 3, padding=1)
        self.embed_out = (nn.Conv2d(head_channels, embedding_dim, 3, padding=1)
                          if embedding_dim else None)
        # SOLOv2: mask branch of 128 channels out to the kernel's 256 (its D)
        self.mask_branch = MaskFeatureBranch(fpn_channels, mask_branch_channels, mask_channels)
        nn.init.constant_(self.cate_out.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01
        nn.init.normal_(self.kernel_out.weight, std=0.01)

    def forward(self, images: torch.Tensor) -> dict:
        fpn = self.features(images)
        cates, kernels, embeds = [], [], []
        for lv in self.levels:
            f = fpn[lv.feature]
            if self.split_feats and lv.feature == "p2":
                f = F.interpolate(f, scale_factor=0.5, mode="bilinear", align_corners=False)
            elif self.split_feats and lv.feature == "p6":
                f = F.interpolate(f, size=fpn["p5"].shape[-2:], mode="bilinear",
                                  align_corners=False)
            k_in = F.interpolate(torch.cat([f, coord_channels(f)], 1), size=(lv.grid, lv.grid),
                                 mode="bilinear", align_corners=False)
            c_in = k_in[:, :-2]
            cates.append(self.cate_out(self.cate_tower(c_in)))
            kt = self.kernel_tower(k_in)
            kernels.append(self.kernel_out(kt))
            if self.embed_out is not None:
                embeds.append(self.embed_out(kt))
        mask_feat = self.mask_branch([fpn[n] for n in ("p2", "p3", "p4", "p5")])
        return {"cate": cates, "kernel": kernels, "embed": embeds, "mask_feat": mask_feat}


# ---------------------------------------------------------------- targets (SOLO Sec. 3.1)

def assign_targets(masks: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
                   levels: list[Level], padded_hw, sigma: float = 0.2) -> list[dict]:
    """Grid targets of one image, per level.

    masks (N, Hp, Wp) bool at padded input size, boxes (N, 4) xyxy. An instance belongs to
    the levels whose scale range holds sqrt(w*h); inside a level, the cells of its centre
    region (centre of mass +- sigma * half box size, at most one cell from the centre cell)
    are positive. Smaller instances are written last, so they win shared cells.
    Returns per level: {'labels': (S*S,) long (-1 = background), 'index': (S*S,) long
    (instance index or -1)}.
    """
    hp, wp = padded_hw
    out = []
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    scale = (w * h).sqrt()
    order = scale.argsort(descending=True)
    for lv in levels:
        s = lv.grid
        lab = torch.full((s, s), -1, dtype=torch.long)
        idx = torch.full((s, s), -1, dtype=torch.long)
        for n in order.tolist():
            if not (lv.scale[0] <= scale[n] <= lv.scale[1]):
                continue
            m = masks[n]
            if not m.any():
                continue
            ys, xs = torch.nonzero(m, as_tuple=True)
            cy, cx = ys.float().mean() + 0.5, xs.float().mean() + 0.5
            half_h, half_w = sigma * h[n] / 2, sigma * w[n] / 2
            ci, cj = int(cy / hp * s), int(cx / wp * s)
            top = max(int((cy - half_h) / hp * s), 0, ci - 1)
            bottom = min(int((cy + half_h) / hp * s), s - 1, ci + 1)
            left = max(int((cx - half_w) / wp * s), 0, cj - 1)
            right = min(int((cx + half_w) / wp * s), s - 1, cj + 1)
            lab[top:bottom + 1, left:right + 1] = labels[n]
            idx[top:bottom + 1, left:right + 1] = n
        out.append({"labels": lab.flatten(), "index": idx.flatten()})
    return out


@dataclass
class SOLOLoss:
    """SOLO's training loss as named terms and their weights (`solo.loss`, built from its
    `_target_`): the focal category loss, and on positive cells SOLOv2's Dice (supervised),
    FreeSOLO's weak box-projection and pairwise-affinity terms (Sec. 3.2), the embedding term,
    CutLER's DropLoss on the category maps. Called as (model, out, samples, images_rgb, valid,
    iteration) -> {"loss_<term>": ..., "loss": sum}."""
    cate: float = 1.0
    dice: float = 0.0             # full-mask Dice (SOLOv2's supervised loss, weight 3)
    proj_max: float = 1.0
    proj_mean: float = 0.1
    pairwise: float = 1.0
    pairwise_warmup: int = 1000
    pairwise_threshold: float = 0.3
    pairwise_kernel: int = 3
    pairwise_dilation: int = 2
    pairwise_theta: float = 2.0
    pairwise_ignore_bottom: int = 0   # pixels at the image bottom left out of the pairwise term
    pairwise_edges: str = "centre_in_box"  # BoxInst; "both_in_box": both ends inside the box
    embedding: float = 0.0
    level_mean: bool = True       # FreeSOLO: mask losses averaged per FPN level, then levels
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    sigma: float = 0.2
    drop_loss_iou: float = 0.0    # > 0: CutLER's DropLoss on the category maps (drop_weights)
    points: float = 0.0           # > 0: PointSup's point loss on the masks (point_mask_loss)

    def __call__(self, model, out, samples, images_rgb, valid, iteration) -> dict:
        return solo_loss(model, out, samples, images_rgb, valid, self, iteration)


@torch.no_grad()
def drop_weights(kernels: torch.Tensor, mask_feat: torch.Tensor, targets: torch.Tensor,
                 positive: torch.Tensor, iou: float, chunk: int = 1024) -> torch.Tensor:
    """CutLER's DropLoss (Wang et al., CVPR 2023, Sec. 3.2, Eq. 2) on SOLO's grid:
    kernels (P, D) of P cells, mask_feat (D, h, w), targets (M, h, w) bool, positive (P,)
    bool -> (P,) weights of the cells' category loss: 0 for a negative cell whose mask
    (logit > 0) overlaps every target by IoU <= `iou` (it may have found an object the
    pseudo-labels miss), else 1. No targets: no cell is dropped."""
    weight = torch.ones(len(kernels), device=kernels.device)
    if len(targets) == 0:
        return weight
    t = targets.flatten(1).float()
    t_area = t.sum(1)
    best = []
    for k in kernels.split(chunk):
        m = (k @ mask_feat.flatten(1) > 0).float()
        inter = m @ t.T
        union = m.sum(1)[:, None] + t_area[None] - inter
        best.append((inter / union.clamp(min=1)).amax(1))
    drop = (torch.cat(best) <= iou) & ~positive
    weight[drop] = 0.0
    return weight


def box_masks(boxes: torch.Tensor, hw) -> torch.Tensor:
    """(N, 4) xyxy boxes -> (N, h, w) bool: the pixels whose centre lies in the box. What a
    point-annotated instance (a box and points, no mask) gives SOLO's cell assignment: the
    centre region around the box's centre."""
    h, w = hw
    yy = torch.arange(h, dtype=torch.float32).view(1, -1, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, -1) + 0.5
    b = boxes.float()[:, :, None, None]
    return (xx >= b[:, 0]) & (xx <= b[:, 2]) & (yy >= b[:, 1]) & (yy <= b[:, 3])


def point_mask_loss(logits: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                    image_hw) -> torch.Tensor:
    """PointSup's point loss (Cheng et al., CVPR 2022, Sec. 3.2) on SOLO's dynamic masks.

    logits (P, h, w): each positive cell's mask logits, covering the padded input image_hw;
    points (P, K, 2): its instance's points (x, y in input pixels, pixel centres at +0.5);
    labels (P, K) in {1, 0, -1}. The logits are read bilinearly at the points
    (align_corners=False, as the PointSup mask head reads its RoI masks; SOLO has no RoI, so
    the frame is the whole input) -> (P,) BCE towards the labels, the mean over each
    instance's K points with those labelled -1 weighted 0 (detectron2's PointSup averages
    over every point)."""
    hp, wp = image_hw
    grid = (points / points.new_tensor([wp, hp]) * 2 - 1)[:, None]           # (P, 1, K, 2)
    at = F.grid_sample(logits[:, None], grid, mode="bilinear",
                       align_corners=False)[:, 0, 0]                          # (P, K)
    return F.binary_cross_entropy_with_logits(at, labels.clamp(min=0).float(),
                                              weight=(labels >= 0).float(),
                                              reduction="none").mean(1)


def solo_loss(model: SOLOv2, out: dict, samples: list[dict], images_rgb: torch.Tensor,
              valid: torch.Tensor, w: SOLOLoss, iteration: int) -> dict:
    """All SOLO losses for a batch. samples carry masks (N,h,w), labels, boxes (+embeddings).
    The dynamic mask convolution and the losses run in float32 (pipeline.ops.precision)."""
    with full_precision(out["mask_feat"].device):
        return _solo_loss(model, to_float32(out), samples, images_rgb.float(), valid, w,
                          iteration)


def _solo_loss(model: SOLOv2, out: dict, samples: list[dict], images_rgb: torch.Tensor,
               valid: torch.Tensor, w: SOLOLoss, iteration: int) -> dict:
    device = out["mask_feat"].device
    b, _, hp, wp = images_rgb.shape
    mf = out["mask_feat"]
    hm, wm = mf.shape[-2:]
    cate_logits, cate_targets, cate_weights = [], [], []
    pos_logits, pos_masks, pos_boxes, pos_img, pos_emb_pred, pos_emb_tgt = [], [], [], [], [], []
    pos_level, pos_points, pos_point_labels = [], [], []
    for i, s in enumerate(samples):
        if w.points and "points" not in s:
            raise ValueError("SOLOLoss.points > 0 needs samples with points")
        if "masks" in s:
            masks = torch.zeros((s["masks"].shape[0], hp, wp), dtype=torch.bool)
            masks[:, :s["masks"].shape[1], :s["masks"].shape[2]] = s["masks"]
        else:  # points: the box stands in for the mask where targets are assigned
            masks = box_masks(s["boxes"], (hp, wp))
        tg = assign_targets(masks, s["labels"], s["boxes"], model.levels, (hp, wp), w.sigma)
        small = F.interpolate(masks[None].float(), size=(hm, wm), mode="bilinear",
                              align_corners=False)[0] >= 0.5 if len(masks) else masks
        for li, t in enumerate(tg):
            cl = out["cate"][li][i].flatten(1).T  # (S*S, C)
            onehot = torch.zeros_like(cl)
            fg = t["labels"] >= 0
            onehot[fg.nonzero()[:, 0], t["labels"][fg]] = 1
            cate_logits.append(cl)
            cate_targets.append(onehot)
            if w.drop_loss_iou > 0:
                cate_weights.append(drop_weights(
                    out["kernel"][li][i].flatten(1).T, mf[i], small.to(device),
                    fg.to(device), w.drop_loss_iou)[:, None].expand_as(cl))
            if fg.any():
                cells = fg.nonzero()[:, 0]
                kern = out["kernel"][li][i].flatten(1).T[cells.to(device)]  # (P, D)
                pos_logits.append(torch.einsum("pd,dhw->phw", kern, mf[i]))
                inst = t["index"][cells]
                pos_masks.append(small[inst])
                pos_boxes.append(s["boxes"][inst])
                pos_img.append(torch.full((len(cells),), i, dtype=torch.long))
                pos_level.append(torch.full((len(cells),), li, dtype=torch.long))
                if w.points:
                    pos_points.append(s["points"][inst])
                    pos_point_labels.append(s["point_labels"][inst])
                if w.embedding and out["embed"] and "embeddings" in s:
                    pos_emb_pred.append(out["embed"][li][i].flatten(1).T[cells.to(device)])
                    pos_emb_tgt.append(s["embeddings"][inst])
    cate_logits = torch.cat(cate_logits)
    cate_targets = torch.cat(cate_targets).to(device)
    num_pos = sum(len(p) for p in pos_logits)
    if cate_weights:
        focal = (sigmoid_focal_loss(cate_logits, cate_targets, alpha=w.focal_alpha,
                                    gamma=w.focal_gamma, reduction="none")
                 * torch.cat(cate_weights)).sum()
    else:
        focal = sigmoid_focal_loss(cate_logits, cate_targets, alpha=w.focal_alpha,
                                   gamma=w.focal_gamma, reduction="sum")
    losses = {"loss_cate": w.cate * focal / (num_pos + 1)}
    zero = mf.sum() * 0
    if num_pos == 0:
        losses.update({k: zero for k, on in (("loss_dice", w.dice), ("loss_pair", w.pairwise),
                       ("loss_proj", w.proj_max or w.proj_mean), ("loss_points", w.points))
                       if on})
    else:
        logits = torch.cat(pos_logits)
        target = torch.cat(pos_masks).to(device)
        prob = logits.sigmoid()
        mean = (lambda v: level_mean(v, torch.cat(pos_level).to(device))) if w.level_mean \
            else (lambda v: v.mean())
        if w.dice:
            losses["loss_dice"] = w.dice * mean(dice_loss(prob, target))
        if w.points:
            losses["loss_points"] = w.points * mean(point_mask_loss(
                logits, torch.cat(pos_points).to(device), torch.cat(pos_point_labels).to(device),
                (hp, wp)))
        if w.proj_max or w.proj_mean:
            losses["loss_proj"] = mean(w.proj_max * projection_dice_loss(prob, target, "max")
                                       + w.proj_mean * projection_dice_loss(prob, target, "mean"))
        if w.pairwise:
            img_idx = torch.cat(pos_img).to(device)
            # colour similarity at stride 4 (BoxInst computes it on the downsampled image)
            small_rgb = F.avg_pool2d(images_rgb, kernel_size=hp // hm, stride=hp // hm)
            sim = colour_similarity(rgb_to_lab(small_rgb), w.pairwise_kernel,
                                    w.pairwise_dilation, w.pairwise_theta)[img_idx]
            boxes = torch.cat(pos_boxes).to(device) * (hm / hp)
            yy = torch.arange(hm, device=device).view(1, -1, 1) + 0.5
            xx = torch.arange(wm, device=device).view(1, 1, -1) + 0.5
            region = ((xx >= boxes[:, 0, None, None]) & (xx <= boxes[:, 2, None, None])
                      & (yy >= boxes[:, 1, None, None]) & (yy <= boxes[:, 3, None, None]))
            small_valid = F.avg_pool2d(valid[:, None].float(), hp // hm)[:, 0] >= 1.0
            if w.pairwise_ignore_bottom:
                rows = small_valid.sum(1, keepdim=True)  # valid rows per column
                cut = max(1, round(w.pairwise_ignore_bottom * hm / hp))
                small_valid = small_valid & (torch.arange(hm, device=device).view(1, -1, 1)
                                             < rows - cut)
            region = region & small_valid[img_idx]
            ramp = min(1.0, (iteration + 1) / max(1, w.pairwise_warmup))
            losses["loss_pair"] = w.pairwise * ramp * mean(pairwise_affinity_loss(
                logits, sim, region, w.pairwise_threshold, w.pairwise_kernel,
                w.pairwise_dilation,
                small_valid[img_idx] if w.pairwise_edges == "centre_in_box" else None))
        if pos_emb_pred:
            losses["loss_embed"] = w.embedding * embedding_loss(
                torch.cat(pos_emb_pred), torch.cat(pos_emb_tgt).to(device)).mean()
    losses["loss"] = sum(losses.values())
    return losses


def level_mean(values: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Mean of per-instance losses within each FPN level, then over the levels that have
    instances (FreeSOLO's released loss): a level with few objects weighs as much as a
    crowded one, instead of each instance weighing the same."""
    n = int(level.max()) + 1
    sums = values.new_zeros(n).index_add(0, level, values)
    counts = torch.bincount(level, minlength=n).to(values)
    has = counts > 0
    return (sums[has] / counts[has]).mean()


# ---------------------------------------------------------------- inference (SOLOv2 Sec. 3.3)

def point_nms(heat: torch.Tensor) -> torch.Tensor:
    """Keep a grid cell's score only where it is the maximum of the 2x2 window ending at it
    (SOLOv2's point NMS on the category maps): neighbouring cells of one object do not all
    become candidates. heat: (..., S, S) scores in [0, 1]."""
    shape = heat.shape
    h = heat.reshape(-1, 1, *shape[-2:])
    hmax = F.max_pool2d(h, 2, stride=1, padding=1)[..., :-1, :-1]
    return (h * (hmax == h)).reshape(shape)


@dataclass
class InferenceParams:
    point_nms: bool = True   # SOLOv2: 2x2 peak test on the category maps before the threshold
    score_threshold: float = 0.1
    mask_threshold: float = 0.5
    pre_nms: int = 500
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0
    update_threshold: float = 0.05
    max_per_image: int = 100


@torch.no_grad()
def solo_predict(model: SOLOv2, out: dict, i: int, p: InferenceParams):
    """Masks of image i of a batch: (soft masks (K, Hm, Wm), scores (K,), labels (K,))."""
    mf = out["mask_feat"][i]
    maps = [c[i].sigmoid() for c in out["cate"]]                               # (C, S, S)
    if p.point_nms:
        maps = [point_nms(m) for m in maps]
    scores = torch.cat([m.flatten(1).T for m in maps])                       # (cells, C)
    kernels = torch.cat([k[i].flatten(1).T for k in out["kernel"]])          # (cells, D)
    strides = torch.cat([torch.full((lv.grid ** 2,), lv.stride, device=mf.device)
                         for lv in model.levels])
    cand = (scores > p.score_threshold).nonzero()
    empty = (mf.new_zeros((0, *mf.shape[-2:])), mf.new_zeros(0), mf.new_zeros(0, dtype=torch.long))
    if len(cand) == 0:
        return empty
    cell, label = cand[:, 0], cand[:, 1]
    cate = scores[cell, label]
    if len(cate) > p.pre_nms:
        top = cate.topk(p.pre_nms).indices
        cell, label, cate = cell[top], label[top], cate[top]
    soft = torch.einsum("nd,dhw->nhw", kernels[cell], mf).sigmoid()
    binary = soft > p.mask_threshold
    area = binary.flatten(1).sum(1).float()
    keep = area > strides[cell]
    if not keep.any():
        return empty
    soft, binary, area, cate, label = soft[keep], binary[keep], area[keep], cate[keep], label[keep]
    maskness = (soft * binary).flatten(1).sum(1) / area
    score = cate * maskness
    order = score.argsort(descending=True)[:p.pre_nms]
    soft, binary, score, label = soft[order], binary[order], score[order], label[order]
    score = matrix_nms(binary.flatten(1), score, label, p.nms_kernel, p.nms_sigma)
    keep = score >= p.update_threshold
    soft, score, label = soft[keep], score[keep], label[keep]
    order = score.argsort(descending=True)[:p.max_per_image]
    return soft[order], score[order], label[order]


def build_solo(cfg, device) -> SOLOv2:
    """SOLOv2 as the config describes it (`cfg.solo`, `cfg.backbone`), on `device`."""
    s = cfg.solo
    levels = [Level(lv.feature, int(lv.grid), int(lv.stride), tuple(lv.scale)) for lv in s.levels]
    model = SOLOv2(build_backbone(cfg.backbone), levels, num_classes=s.num_classes,
                   fpn_channels=s.fpn_channels, head_channels=s.head_channels,
                   head_convs=s.head_convs, mask_channels=s.mask_channels,
                   mask_branch_channels=s.get("mask_branch_channels") or s.mask_channels,
                   embedding_dim=s.embedding.dim if s.embedding.enabled else 0,
                   split_feats=bool(s.get("split_feats", True)))
    return model.to(device)
