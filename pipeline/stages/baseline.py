"""Stage `baseline`: the no-learning mask proposals a user would try first, so every table
shows what "no learning" scores, and a pseudo-label source the chooser (stage=choose) weighs
against the learned ones. Each method of `baseline.methods` writes baseline/<method>/."""
from __future__ import annotations

from pathlib import Path

from pipeline.data.coco import mask_to_annotation
from pipeline.errors import UserError
from pipeline.provenance import BATCHING, settings
from pipeline.reporting import predict_splits


def method_of(b, name: str):
    """Baseline `name`: its options node's `_target_` function with the node's arguments
    (Hydra's instantiate, partial), image -> [(mask, score)]."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    node = b.options.get(name)
    if node is None or "_target_" not in node:
        raise UserError(f"baseline.methods names {name!r}, which baseline.options does not "
                        f"define with a _target_; use some of {sorted(b.options)}")
    try:
        return instantiate(node, _partial_=True)
    except InstantiationException as e:
        raise UserError(f"baseline.options.{name}: {e}") from None


def run(cfg) -> dict:
    b = cfg.baseline
    methods = {m: method_of(b, m) for m in b.methods}   # every one checked before any runs
    results = {}
    for method, fn in methods.items():
        def predict(items, fn=fn):
            return [[mask_to_annotation(m, info["id"], 1, score=round(s, 5))
                     for m, s in fn(arr)] for info, arr in items]

        # the pseudo-label images (source_splits: no ground truth needed) and the eval splits
        done = predict_splits(cfg, predict, [*b.get("source_splits", []), *b.splits],
                              Path(cfg.run_dir) / method,
                              prefix=method, config_key=[method, settings(b.options[method], BATCHING)],
                              shard_size=b.shard_size, desc=method + " {split}",
                              title=method + " ({split})")
        results.update({f"{method}/{k}": v for k, v in done.items()})
    return results
