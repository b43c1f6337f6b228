"""Stage `sample`: (re)generate a built-in dataset (the synthetic sample, the coins dev set)."""
from __future__ import annotations

from pipeline.data.datasets import GENERATED, ensure_generated
from pipeline.errors import UserError


def run(cfg) -> dict:
    if cfg.dataset.kind not in GENERATED:
        raise UserError(f"stage=sample writes the built-in datasets only "
                        f"(dataset={' or dataset='.join(GENERATED)}); got {cfg.dataset.kind!r}")
    ensure_generated(cfg.dataset)
    return {s: str(cfg.dataset.splits[s].get("json") or cfg.dataset.splits[s].images)
            for s in cfg.dataset.splits}
