"""Stage `freemask`: class-agnostic pseudo-masks with no annotation (FreeSOLO, Sec. 3.1).

For each configured split: `free_masks_{split}.json` (COCO, RLE, score, maskness,
embedding), overlays of a few images, `metrics.json` where the split has ground truth,
and `skipped.json` listing unreadable images.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import dist
from pipeline.data.coco import mask_to_annotation
from pipeline.data.datasets import get_split
from pipeline.data.transforms import same_size_batches, to_tensor
from pipeline.models.backbone import build_backbone, normalize
from pipeline.models.free_mask import FreeMaskParams, free_masks, upsample_masks
from pipeline.reporting import finish_split
from pipeline.sharded import run_sharded

log = logging.getLogger(__name__)

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


class FreeMaskPredictor:
    """Batched free masks for lists of (info, image) of any sizes."""

    def __init__(self, backbone, cfg, device):
        self.backbone = backbone.to(device).eval()
        self.cfg, self.device = cfg, device
        self.params = FreeMaskParams.from_cfg(cfg)
        self.stride = STRIDES[cfg.feature_level]

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.backbone(normalize(batch.to(self.device)))[self.cfg.feature_level]

    @torch.no_grad()
    def __call__(self, items):
        c = self.cfg
        results = {}
        for shape, group in same_size_batches(items, c.batch_size, c.short_side, c.max_size):
            batch = torch.stack([to_tensor(arr, shape) for _, arr in group])
            out = free_masks(self.features(batch), self.params)
            for b, (info, arr) in enumerate(group):
                results[info["id"]] = self.to_annotations(info, arr.shape[:2], shape,
                                                          {k: v[b] for k, v in out.items()})
        return [results[info["id"]] for info, _ in items]

    def to_annotations(self, info, image_hw, input_hw, r) -> list[dict]:
        c = self.cfg
        keep = r["valid"] & (r["maskness"] >= c.min_maskness)
        if not keep.any():
            return []
        masks = upsample_masks(r["soft"][keep][None].float(), self.stride, input_hw, image_hw,
                               c.mask_threshold)[0].cpu().numpy()
        h, w = image_hw
        anns = []
        for m, score, mness, emb in zip(masks, r["score"][keep].tolist(),
                                        r["maskness"][keep].tolist(), r["embedding"][keep]):
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            if (xs.max() - xs.min() + 1) >= c.max_box_width_frac * w:
                continue  # spans the image: background, not an object
            if ys.mean() < c.min_center_y_frac * h:
                continue  # centre in the top band of the image (sky, ceiling)
            extra = {"score": round(score, 5), "maskness": round(mness, 5)}
            if c.save_embedding:
                extra["embedding"] = [round(v, 4) for v in emb.tolist()]
            anns.append(mask_to_annotation(m, info["id"], 1, **extra))
        return anns


def run(cfg) -> dict:
    fm = cfg.freemask
    out_dir = Path(cfg.run_dir)
    device = dist.init(cfg.hardware.device)
    backbone = build_backbone(cfg.backbone)
    predictor = FreeMaskPredictor(backbone, fm, device)
    weights = cfg.backbone.get("weights")
    weights_id = None
    if weights:
        st = Path(weights).stat()
        weights_id = (str(weights), st.st_size, st.st_mtime_ns)
    results = {}
    for split_name in fm.splits:
        split = get_split(cfg.dataset, split_name)
        out_json = out_dir / f"free_masks_{split_name}.json"
        coco, skipped = run_sharded(
            split, predictor, out_json, out_dir / "shards" / split_name,
            config_key=[dict(fm), dict(cfg.backbone), weights_id],
            shard_size=fm.shard_size, workers=cfg.hardware.workers, strict=cfg.strict,
            progress=cfg.progress, desc=f"free masks {split_name}",
            info={"description": "weakseg free masks (FreeSOLO Sec. 3.1)",
                  "backbone": cfg.backbone.arch, "weights": str(weights)})
        results[split_name] = finish_split(cfg, split, coco, skipped, out_dir, out_json,
                                           f"free masks ({split_name})")
    return results
