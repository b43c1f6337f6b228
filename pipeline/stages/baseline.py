"""Stage `baseline`: the no-learning mask proposals a user would try first, so every table
shows what "no learning" scores. Each method of `baseline.methods` writes baseline/<method>/."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.coco import mask_to_annotation
from pipeline.eval.baselines import BASELINES
from pipeline.errors import UserError
from pipeline.provenance import BATCHING, settings
from pipeline.reporting import predict_splits


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

        done = predict_splits(cfg, predict, b.splits, Path(cfg.run_dir) / method,
                              prefix=method, config_key=[method, settings(kwargs, BATCHING)],
                              shard_size=b.shard_size, desc=method + " {split}",
                              title=method + " ({split})")
        results.update({f"{method}/{k}": v for k, v in done.items()})
    return results
