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

from pipeline import dist
from pipeline.data.datasets import get_split
from pipeline.models.backbone import build_backbone
from pipeline.models.free_mask_predictor import FreeMaskPredictor
from pipeline.provenance import BATCHING, file_identity, settings
from pipeline.reporting import finish_split
from pipeline.sharded import run_sharded

log = logging.getLogger(__name__)


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
