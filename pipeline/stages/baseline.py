"""Stage `baseline`: the no-learning mask proposals a user would try first, so every table
shows what "no learning" scores, and a pseudo-label source the chooser (stage=choose) weighs
against the learned ones. Each method of `baseline.methods` writes baseline/<method>/."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.coco import mask_to_annotation
from pipeline.data.datasets import get_split
from pipeline.eval.baselines import BASELINES
from pipeline.errors import UserError
from pipeline.provenance import BATCHING, settings
from pipeline.reporting import finish_split
from pipeline.sharded import run_sharded


def run(cfg) -> dict:
    b = cfg.baseline
    unknown = [m for m in b.methods if m not in BASELINES]
    if unknown:
        raise UserError(f"baseline.methods has unknown {unknown}; use some of {sorted(BASELINES)}")
    results = {}
    for method in b.methods:
        fn, kwargs = BASELINES[method], dict(b.options.get(method) or {})

        def predict(items, fn=fn, kwargs=kwargs):
            return [[mask_to_annotation(m, info["id"], 1, score=round(s, 5))
                     for m, s in fn(arr, **kwargs)] for info, arr in items]

        out_dir = Path(cfg.run_dir) / method
        # the pseudo-label images (source_splits: no ground truth needed) and the eval splits
        for split_name in dict.fromkeys([*b.get("source_splits", []), *b.splits]):
            split = get_split(cfg.dataset, split_name)
            out_json = out_dir / f"{method}_{split_name}.json"
            coco, skipped = run_sharded(split, predict, out_json, out_dir / "shards" / split_name,
                                        config_key=[method, settings(kwargs, BATCHING)],
                                        shard_size=b.shard_size,
                                        workers=cfg.hardware.workers, strict=cfg.strict,
                                        progress=cfg.progress, desc=f"{method} {split_name}")
            results[f"{method}/{split_name}"] = finish_split(
                cfg, split, coco, skipped, out_dir, out_json, f"{method} ({split_name})")
    return results
