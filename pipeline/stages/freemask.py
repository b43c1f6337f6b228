"""Stage `freemask`: class-agnostic pseudo-masks with no annotation.

Two generators on the same backbone features, chosen by `freemask.method`:
`freesolo` (FreeSOLO, CVPR 2022, Sec. 3.1) and `maskcut` (CutLER, CVPR 2023, Sec. 3.1).
For each configured split: `free_masks_{split}.json` (COCO, RLE, score, embedding),
overlays of a few images, `metrics.json` where the split has ground truth, and
`skipped.json` listing unreadable images.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from pipeline import dist
from pipeline.data.coco import mask_to_annotation
from pipeline.data.datasets import get_split
from pipeline.data.transforms import same_size_batches, to_tensor
from pipeline.errors import UserError
from pipeline.models.backbone import build_backbone, normalize
from pipeline.models.free_mask import (FreeMaskParams, border_strip, embed, free_masks,
                                       upsample_masks)
from pipeline.models.maskcut import MaskCutParams, maskcut
from pipeline.provenance import BATCHING, file_identity, settings
from pipeline.reporting import finish_split
from pipeline.sharded import run_sharded

log = logging.getLogger(__name__)

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
METHODS = ("freesolo", "maskcut")



def row_projection_centre(mask: np.ndarray) -> float:
    """Centre of the mask's row projection: the mean index of the rows it occupies, each
    row once (FreeSOLO's released filter), so a wide band low in the image is not pulled
    up by its pixel count the way a centre of mass is."""
    return float(np.nonzero(mask.any(1))[0].mean())

class FreeMaskPredictor:
    """Batched free masks for lists of (info, image) of any sizes."""

    def __init__(self, backbone, cfg, device):
        if cfg.method not in METHODS:
            raise UserError(f"freemask.method={cfg.method!r} unknown; use one of {METHODS}")
        self.backbone = backbone.to(device).eval()
        self.cfg, self.device = cfg, device
        self.params = FreeMaskParams.from_cfg(cfg)
        self.maskcut = MaskCutParams.from_cfg(cfg.maskcut)
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
        feat = self.backbone(x)[self.cfg.feature_level]
        if pad:
            h, w = (-(-d // self.stride) for d in batch.shape[-2:])
            feat = feat[:, :, pad:pad + h, pad:pad + w]
        return feat

    @torch.no_grad()
    def __call__(self, items):
        c = self.cfg
        results = {}
        for shape, group in same_size_batches(items, c.batch_size, c.short_side, c.max_size):
            batch = torch.stack([to_tensor(arr, shape) for _, arr in group])
            feat = self.features(batch)
            per_image = (self._freesolo(feat) if c.method == "freesolo"
                         else self._maskcut(feat, batch))
            for (info, arr), (soft, extras) in zip(group, per_image):
                results[info["id"]] = self.to_annotations(info, arr, shape, soft, extras)
        return [results[info["id"]] for info, _ in items]

    def _freesolo(self, feat):
        """(soft masks (K, h, w), [per-mask extra fields]) per image, FreeSOLO Sec. 3.1."""
        out = free_masks(feat, self.params)
        # Matrix NMS decays duplicates; filtering on the decayed score removes them, as the
        # released code does (filter_score=raw: filter on maskness, NMS only re-ranks).
        ranked = out["score"] if self.cfg.filter_score == "decayed" else out["maskness"]
        keep = out["valid"] & (ranked >= self.cfg.min_maskness)
        for b in range(feat.shape[0]):
            k = keep[b]
            extras = [{"score": round(s, 5), "maskness": round(m, 5), "embedding": e}
                      for s, m, e in zip(out["score"][b][k].tolist(),
                                         out["maskness"][b][k].tolist(), out["embedding"][b][k])]
            yield out["soft"][b][k], extras

    def _maskcut(self, feat, batch):
        """Per image, repeated normalized cuts on the feature cells (CutLER Sec. 3.1)."""
        h, w = feat.shape[-2:]
        cells = F.adaptive_avg_pool2d(batch, (h, w))   # mean colour of each feature cell
        fnorm = F.normalize(feat.float(), dim=1)
        for b in range(feat.shape[0]):
            lab = torch.from_numpy(rgb2lab(cells[b].permute(1, 2, 0).numpy() / 255.0)
                                   ).permute(2, 0, 1)
            objs = maskcut(feat[b].cpu(), lab, self.maskcut)
            if not objs:
                yield torch.zeros(0, h, w), []
                continue
            masks = torch.from_numpy(np.stack([m for m, _ in objs])).float()
            # embedding: the mask's mean feature, like FreeSOLO's query vector
            means = torch.einsum("khw,chw->kc", masks, fnorm[b].cpu()) / masks.sum((1, 2))[:, None]
            emb = embed(means, self.params.embedding_dim)
            yield masks, [{"score": round(s, 5), "embedding": e}
                          for (_, s), e in zip(objs, emb)]

    def to_annotations(self, info, image, input_hw, soft, extras) -> list[dict]:
        c = self.cfg
        if len(extras) == 0:
            return []
        image_hw = image.shape[:2]
        guide = None
        if c.guided_radius > 0:
            guide = torch.from_numpy(image.mean(2, dtype=np.float32) / 255.0)[None, None]
        masks = upsample_masks(soft[None].float(), self.stride, input_hw, image_hw,
                               c.mask_threshold, guide, c.guided_radius,
                               c.guided_eps)[0].cpu().numpy()
        h, w = image_hw
        band = max(1, round(c.border_band_frac * min(h, w)))
        anns = []
        for m, extra in zip(masks, extras):
            if not m.any():
                continue
            if m.any(0).sum() >= c.max_box_width_frac * w:
                continue  # occupies (almost) every column: background, not an object
            if row_projection_centre(m) < c.min_center_y_frac * h:
                continue  # centre in the top band of the image (sky, ceiling)
            if c.max_border_frac < 1 and border_strip(m, band, c.max_border_frac):
                continue  # hugs an image edge
            extra = dict(extra)
            emb = extra.pop("embedding")
            if c.save_embedding:
                extra["embedding"] = [round(v, 4) for v in emb.tolist()]
            anns.append(mask_to_annotation(m, info["id"], 1, **extra))
        return anns


def run(cfg) -> dict:
    fm = cfg.freemask
    out_dir = Path(cfg.run_dir)
    device = dist.init(cfg.hardware.device)
    backbone = build_backbone(cfg.backbone, norm="bn")  # inference: eval-mode BN
    predictor = FreeMaskPredictor(backbone, fm, device)
    weights = cfg.backbone.get("weights")
    # features in eval mode: backbone.norm (frozen or not while fine-tuning) cannot change them
    key = [settings(fm, BATCHING), cfg.backbone.arch, cfg.backbone.get("seed"),
           file_identity(weights)]
    results = {}
    for split_name in dict.fromkeys([*fm.splits, *fm.get("eval_splits", [])]):
        split = get_split(cfg.dataset, split_name)
        out_json = out_dir / f"free_masks_{split_name}.json"
        coco, skipped = run_sharded(
            split, predictor, out_json, out_dir / "shards" / split_name,
            config_key=key,
            shard_size=fm.shard_size, workers=cfg.hardware.workers, strict=cfg.strict,
            progress=cfg.progress, desc=f"free masks {split_name}",
            info={"description": f"weakseg free masks ({fm.method})",
                  "backbone": cfg.backbone.arch, "weights": str(weights)})
        results[split_name] = finish_split(cfg, split, coco, skipped, out_dir, out_json,
                                           f"free masks ({split_name})")
    return results
