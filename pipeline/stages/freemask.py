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
from pipeline.models.backbone import build_backbone
from pipeline.models.free_mask_predictor import FreeMaskPredictor
from pipeline.provenance import BATCHING, file_identity, settings
from pipeline.reporting import predict_splits

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
    return predict_splits(cfg, predictor, [*fm.splits, *fm.get("eval_splits", [])], out_dir,
                          prefix="free_masks", config_key=key, shard_size=fm.shard_size,
                          desc="free masks {split}", title="free masks ({split})",
                          info={"description": f"weakseg free masks ({fm.method})",
                                "backbone": cfg.backbone.arch, "weights": str(weights)})
