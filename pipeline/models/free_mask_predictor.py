"""Free masks for lists of (info, image): FreeSOLO (CVPR 2022, Sec. 3.1) or MaskCut (CutLER,
CVPR 2023, Sec. 3.1) on the backbone's features, then the released filters at image size."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from pipeline.config_checks import free_mask_method
from pipeline.data.coco import mask_to_annotation
from pipeline.models.backbone import normalize
from pipeline.models.params import dataclass_from
from pipeline.models.free_mask import (FreeMaskParams, embed, free_masks, grey_guide,
                                       upsample_masks)
from pipeline.models.dense_crf import CRFParams, crf_refine, require_crf
from pipeline.models.maskcut import MaskCutParams, maskcut
from pipeline.models.predictor import BatchPredictor

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def row_projection_centres(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool -> (K,) centre of each mask's row projection: the mean index of the rows
    it occupies, each row once (FreeSOLO's released filter), so a wide band low in the image
    is not pulled up by its pixel count the way a centre of mass is."""
    rows = masks.any(2).float()
    idx = torch.arange(masks.shape[1], device=masks.device, dtype=torch.float32)
    return (rows * idx).sum(1) / rows.sum(1).clamp_min(1)


def border_strips(masks: torch.Tensor, band: int, max_frac: float) -> torch.Tensor:
    """(K, H, W) bool -> (K,) True where more than `max_frac` of the mask lies within `band` px
    of the image edge: a strip hugging the border, not an object (objects cut by the edge
    reach inside)."""
    area = masks.sum((1, 2))
    inner = masks[:, band:-band, band:-band].sum((1, 2)) if band > 0 else area
    return (area > 0) & ((area - inner) > max_frac * area)


def mask_filters(masks: torch.Tensor, c) -> torch.Tensor:
    """(K, H, W) bool masks at image size -> (K,) keep: FreeSOLO's filters, batched on the
    masks' device (one pass over all masks instead of numpy per mask)."""
    _, h, w = masks.shape
    band = max(1, round(c.border_band_frac * min(h, w)))
    keep = masks.flatten(1).any(1)
    keep &= masks.any(1).sum(1) < c.max_box_width_frac * w  # (almost) every column: background
    keep &= row_projection_centres(masks) >= c.min_center_y_frac * h  # sky, ceiling
    if c.max_border_frac < 1:
        keep &= ~border_strips(masks, band, c.max_border_frac)  # hugs an image edge
    return keep


def keep_all(masks: torch.Tensor) -> torch.Tensor:
    """A method's `refine` that drops nothing: every mask kept."""
    return torch.ones(len(masks), dtype=torch.bool, device=masks.device)


class FreeSOLOMasks:
    """FreeSOLO's Free Mask (CVPR 2022, Sec. 3.1): every feature cell at every query scale is
    a query, its cosine map a soft mask, ranked by maskness and Matrix NMS."""

    def __init__(self, node, fm):
        self.node = node
        self.params = dataclass_from(FreeMaskParams, node, mask_threshold=fm.mask_threshold,
                                     embedding_dim=fm.embedding_dim)

    def __call__(self, feat, batch):
        """(soft masks (K, h, w), [per-mask extra fields]) per image."""
        out = free_masks(feat, self.params)
        # Matrix NMS decays duplicates; filtering on the decayed score removes them, as the
        # released code does (filter_score=raw: filter on maskness, NMS only re-ranks).
        ranked = out["score"] if self.node.filter_score == "decayed" else out["maskness"]
        keep = out["valid"] & (ranked >= self.node.min_maskness)
        for b in range(feat.shape[0]):
            k = keep[b]
            extras = [{"score": round(s, 5), "maskness": round(m, 5), "embedding": e}
                      for s, m, e in zip(out["score"][b][k].tolist(),
                                         out["maskness"][b][k].tolist(), out["embedding"][b][k])]
            yield out["soft"][b][k], extras

    def refine(self, image, masks):
        """Masks at image size -> (masks, keep): nothing beyond the shared filters."""
        return masks, keep_all(masks)


class MaskCutMasks:
    """CutLER's MaskCut (CVPR 2023, Sec. 3.1): repeated normalized cuts on the feature cells'
    graph (here also colour and position), optionally CutLER's dense CRF on each mask."""

    def __init__(self, node, fm):
        self.params = dataclass_from(MaskCutParams, node)
        self.embedding_dim = int(fm.embedding_dim)
        self.crf = bool(node.get("crf", False))
        if self.crf:  # the optional package, checked before any work
            require_crf()
            self.crf_params = CRFParams(min_iou=float(node.get("crf_min_iou", 0.5)))

    def __call__(self, feat, batch):
        """(soft masks (K, h, w), [per-mask extra fields]) per image."""
        h, w = feat.shape[-2:]
        cells = F.adaptive_avg_pool2d(batch, (h, w))   # mean colour of each feature cell
        fnorm = F.normalize(feat.float(), dim=1)
        for b in range(feat.shape[0]):
            lab = torch.from_numpy(rgb2lab(cells[b].permute(1, 2, 0).numpy() / 255.0)
                                   ).permute(2, 0, 1)
            objs = maskcut(feat[b].cpu(), lab, self.params)
            if not objs:
                yield torch.zeros(0, h, w), []
                continue
            masks = torch.from_numpy(np.stack([m for m, _ in objs])).float()
            # embedding: the mask's mean feature, like FreeSOLO's query vector
            means = torch.einsum("khw,chw->kc", masks, fnorm[b].cpu()) / masks.sum((1, 2))[:, None]
            emb = embed(means, self.embedding_dim)
            yield masks, [{"score": round(s, 5), "embedding": e}
                          for (_, s), e in zip(objs, emb)]

    def refine(self, image, masks):
        """Masks at image size -> (masks, keep): CutLER's dense CRF and its IoU(before, after)
        check when `crf` is on."""
        if not self.crf:
            return masks, keep_all(masks)
        refined, ok = crf_refine(np.ascontiguousarray(image[..., :3]), masks.cpu().numpy(),
                                 self.crf_params)
        return torch.from_numpy(refined).to(masks.device), torch.from_numpy(ok).to(masks.device)


def build_method(fm):
    """The free-mask method of `freemask.method`: the class its node's `_target_` names
    (Hydra's convention), built with (its node, the freemask node); a method of one's own
    plugs in by config, `freemask.method=mine freemask.mine._target_=my_pkg.MyMasks`."""
    from hydra.utils import get_class
    node = free_mask_method(fm)
    return get_class(str(node._target_))(node, fm)


class FreeMaskPredictor(BatchPredictor):
    """Batched free masks for lists of (info, image) of any sizes: the configured method on
    the backbone's features, then the shared filters at image size."""

    def __init__(self, backbone, cfg, device):
        self.method = build_method(cfg)
        super().__init__(device, cfg.batch_size, cfg.short_side, cfg.max_size)
        self.backbone = backbone.to(device).eval()
        self.cfg = cfg
        self.stride = STRIDES[cfg.feature_level]

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of (B, 3, H, W) images. Zero padding inside the convolutions makes the
        border cells unlike any content cell, so they group into strips along the edges: the
        image is reflect-padded by `border_pad` cells and those cells cropped off again."""
        k = int(self.cfg.border_pad)
        pad = min(k * self.stride, batch.shape[-2] - 1, batch.shape[-1] - 1) // self.stride
        x = normalize(batch.to(self.device))
        if pad:
            px = pad * self.stride
            x = F.pad(x, (px, px, px, px), mode="reflect")
        level = self.cfg.feature_level
        feat = self.backbone(x, up_to=level)[level]
        if pad:
            h, w = (-(-d // self.stride) for d in batch.shape[-2:])
            feat = feat[:, :, pad:pad + h, pad:pad + w]
        return feat

    def forward(self, batch, shape):
        return self.method(self.features(batch), batch)

    def annotations(self, info, image, input_hw, out) -> list[dict]:
        soft, extras = out
        c = self.cfg
        if len(extras) == 0:
            return []
        image_hw = image.shape[:2]
        guide = grey_guide(image) if c.guided_radius > 0 else None
        masks = upsample_masks(soft[None].float(), self.stride, input_hw, image_hw,
                               c.mask_threshold, guide, c.guided_radius, c.guided_eps)[0]
        keep = mask_filters(masks, c)
        masks, kept = self.method.refine(image, masks)
        keep &= kept
        masks = masks[keep].cpu().numpy()
        anns = []
        for m, extra in zip(masks, [e for e, k in zip(extras, keep.tolist()) if k]):
            extra = dict(extra)
            emb = extra.pop("embedding")
            if c.save_embedding:
                extra["embedding"] = [round(v, 4) for v in emb.tolist()]
            anns.append(mask_to_annotation(m, info["id"], 1, **extra))
        return anns
