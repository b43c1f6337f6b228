"""Stage `points`: PointSup annotations from any COCO file with masks (Cheng et al., Sec. 3).

Writes `<stem>_n<N>_v<k>.json` for k = 1..versions: N points per instance uniform in the box,
labelled by the mask, seeded per version, masks stripped. detectron2's PointSup project and
`supervision=points supervision.annotations=<file>` read them.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.coco import load_coco, save_coco
from pipeline.data.datasets import get_split
from pipeline.data.points import points_from_masks
from pipeline.errors import UserError


def run(cfg) -> dict:
    p = cfg.points
    if p.input:
        src, stem = load_coco(p.input, "points.input"), Path(p.input).stem
    else:
        split = get_split(cfg.dataset, p.split)
        src, stem = split.coco, f"{cfg.dataset.name}_{p.split}"
    if not any("segmentation" in a for a in src["annotations"]):
        raise UserError(f"{p.input or p.split}: no masks to sample points from")
    out = {}
    for v in range(1, int(p.versions) + 1):
        data = points_from_masks(src, n=int(p.n), seed=int(p.seed) + v - 1)
        path = Path(cfg.run_dir) / f"{stem}_n{p.n}_v{v}.json"
        save_coco(path, data)
        out[f"v{v}"] = str(path)
        print(f"{len(data['annotations'])} instances x {p.n} points -> {path}")
    return out
