"""Stage `sample`: (re)generate the embedded synthetic dataset."""
from __future__ import annotations

from pipeline.data.datasets import ensure_sample
from pipeline.errors import UserError


def run(cfg) -> dict:
    if cfg.dataset.kind != "sample":
        raise UserError("stage=sample needs dataset=sample")
    ensure_sample(cfg.dataset)
    return {s: str(cfg.dataset.splits[s].json) for s in cfg.dataset.splits}
