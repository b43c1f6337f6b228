"""Stage `sample`: (re)generate a built-in dataset (the synthetic sample, the coins dev set);
for a user's own data (`dataset=folder`, `dataset=coco`) there is nothing to write: it checks
that every split is there and says what it found, so `make pseudo-labels` runs on any data."""
from __future__ import annotations

import logging

from pipeline.data.datasets import GENERATED, ensure_generated, get_split

log = logging.getLogger(__name__)


def run(cfg) -> dict:
    if cfg.dataset.kind in GENERATED:
        ensure_generated(cfg.dataset)
        return {s: str(cfg.dataset.splits[s].get("json") or cfg.dataset.splits[s].images)
                for s in cfg.dataset.splits}
    out = {}
    for name in cfg.dataset.splits:
        split = get_split(cfg.dataset, name)  # one line naming what is missing, if anything
        gt = f"{len(split.coco['annotations'])} annotations" if split.has_gt else \
            "no ground truth"
        print(f"dataset {cfg.dataset.name}, split {name}: {len(split.images)} images in "
              f"{split.image_root} ({gt})"
              + (f"; {len(split.left_out)} file(s) left out (not images or broken links)"
                 if split.left_out else ""))
        out[name] = str(split.json_path or split.image_root)
    return out
