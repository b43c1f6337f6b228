"""Stage `annotate_sync`: pull annotations (raw export kept first) and write `points.json`, COCO
with point_coords/point_labels (+ lead_time) for `supervision=points supervision.annotations=`."""
from __future__ import annotations

from pathlib import Path

from annotation import sync as ls_sync
from annotation.client import connect
from pipeline.data.coco import load_coco
from pipeline.data.datasets import get_split
from pipeline.errors import UserError
from pipeline.stages.annotate import token


def run(cfg) -> dict:
    a = cfg.annotation
    client = connect(f"http://{a.host}:{a.port}", token(a))
    split = get_split(cfg.dataset, a.split)
    pids = [p.id for p in client.projects.list() if p.title == a.project]
    if not pids:
        raise UserError(f"no Label Studio project named {a.project!r}; run `make annotate`")
    coco = split.coco if a.source == "gt" else load_coco(a.source, "annotation.source")
    images = {im["id"]: im for im in coco["images"]}
    out = Path(cfg.run_dir) / "points.json"
    res = ls_sync.sync(client, pids[0], Path(cfg.run_dir), images, coco["categories"],
                       split.image_root, out, int(a.points_per_box))
    print(f"\n{res['instances']} instances with points on {res['images']} images -> {out}\n"
          f"{res['dropped_points']} point(s) of deleted boxes dropped; {res['fewer_points']} "
          f"box(es) with fewer than {a.points_per_box} points flagged (fewer_points)\n"
          f"train on them: python -m pipeline stage=maskrcnn supervision=points "
          f"supervision.annotations={out}\n")
    return res
