"""Stage `baseline`: trivial mask proposals, so every table shows what "no learning" scores."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.coco import mask_to_annotation
from pipeline.data.datasets import get_split
from pipeline.eval.baselines import BASELINES
from pipeline.errors import UserError
from pipeline.reporting import finish_split
from pipeline.sharded import run_sharded


def run(cfg) -> dict:
    b = cfg.baseline
    if b.method not in BASELINES:
        raise UserError(f"baseline.method={b.method!r} unknown; use one of {sorted(BASELINES)}")
    fn = BASELINES[b.method]
    kwargs = dict(b.get("options") or {})

    def predict(items):
        return [[mask_to_annotation(m, info["id"], 1, score=round(s, 5))
                 for m, s in fn(arr, **kwargs)] for info, arr in items]

    out_dir = Path(cfg.run_dir)
    results = {}
    for split_name in b.splits:
        split = get_split(cfg.dataset, split_name)
        out_json = out_dir / f"{b.method}_{split_name}.json"
        coco, skipped = run_sharded(split, predict, out_json, out_dir / "shards" / split_name,
                                    config_key=dict(b), shard_size=b.shard_size,
                                    workers=cfg.hardware.workers, strict=cfg.strict,
                                    progress=cfg.progress, desc=f"{b.method} {split_name}")
        results[split_name] = finish_split(cfg, split, coco, skipped, out_dir, out_json,
                                           f"{b.method} ({split_name})")
    return results
