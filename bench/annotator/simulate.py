"""A simulated annotator: answers tasks through the same API, from ground-truth masks.

For tests and benchmarks: keeps each pre-placed box and point, sets each point's label from
the ground-truth mask, with configurable click noise (pixels) and label error rate.
"""
from __future__ import annotations

import numpy as np

from annotation.protocol import BACKGROUND, OBJECT
from pipeline.data.coco import annotations_by_image, decode_segmentation


def answer(task: dict, gt: dict[int, list[dict]], info: dict, rng, noise_px: float = 0.0,
           error_rate: float = 0.0) -> list[dict]:
    w, h = info["width"], info["height"]
    masks = [decode_segmentation(a["segmentation"], h, w) for a in gt.get(info["id"], [])]
    union = np.zeros((h, w), bool)
    for m in masks:
        union |= m.astype(bool)
    out = []
    for r in (task.get("predictions") or [{}])[0].get("result", []):
        r = {k: (dict(v) if isinstance(v, dict) else v) for k, v in r.items()}
        if r["type"] == "keypointlabels":
            v = r["value"]
            x = float(np.clip(v["x"] * w / 100 + rng.normal(0, noise_px) if noise_px else
                              v["x"] * w / 100, 0, w - 1e-3))
            y = float(np.clip(v["y"] * h / 100 + rng.normal(0, noise_px) if noise_px else
                              v["y"] * h / 100, 0, h - 1e-3))
            is_obj = bool(union[int(y), int(x)])
            if rng.random() < error_rate:
                is_obj = not is_obj
            v.update(x=100 * x / w, y=100 * y / h, keypointlabels=[OBJECT if is_obj
                                                                    else BACKGROUND])
        out.append(r)
    return out


def annotate_all(client, project: int, coco_gt: dict, noise_px: float = 0.0,
                 error_rate: float = 0.0, seed: int = 0, seconds: float = 20.0,
                 limit: int | None = None) -> int:
    """Submit an annotation for every task without one (at most `limit`); returns how many
    were made."""
    gt = annotations_by_image(coco_gt)
    infos = {im["id"]: im for im in coco_gt["images"]}
    rng = np.random.default_rng(seed)
    n = 0
    for t in client.tasks.list(project=project, fields="all"):
        task = t.model_dump(mode="json")
        if task.get("annotations"):
            continue
        if limit is not None and n >= limit:
            break
        info = infos.get(int(task["data"]["weakseg_image_id"]))
        if info is None:
            continue
        client.annotations.create(id=task["id"], result=answer(task, gt, info, rng, noise_px,
                                                               error_rate),
                                  lead_time=seconds)
        n += 1
    return n
