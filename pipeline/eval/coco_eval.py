"""COCO mask, box and boundary AP with pycocotools' COCOeval, class-agnostic by default.

`boundary` is AP^B (Boundary IoU, Cheng et al. CVPR 2021; see pipeline/eval/boundary.py)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.data.coco import class_agnostic
from pipeline.eval.boundary import BoundaryCOCOeval

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
              "ARs", "ARm", "ARl"]


def _coco_api(data: dict) -> COCO:
    api = COCO()
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def evaluate(gt: dict, predictions: list[dict], iou_types=("segm", "bbox", "boundary"),
             agnostic: bool = True, image_ids=None) -> dict[str, dict[str, float]]:
    """{'segm': {'AP': .., ...}, 'bbox': {...}, 'boundary': {...}} in percent, over `image_ids` (default: all GT).

    Predictions need image_id, category_id, score and segmentation (RLE) / bbox.
    """
    if agnostic:
        gt = class_agnostic(gt)
        predictions = [dict(p, category_id=1) for p in predictions]
    gt = dict(gt)
    for i, a in enumerate(gt["annotations"], start=1):  # COCOeval needs ids and iscrowd
        a.setdefault("id", i)
        a.setdefault("iscrowd", 0)
    ids = sorted(image_ids if image_ids is not None else [im["id"] for im in gt["images"]])
    coco_gt = _coco_api(gt)
    out, wanted = {}, set(ids)
    for iou_type in iou_types:
        preds = [p for p in predictions if p["image_id"] in wanted]
        if iou_type in ("segm", "boundary"):
            preds = [p for p in preds if "segmentation" in p]
        if not preds:
            out[iou_type] = {k: 0.0 for k in STAT_NAMES}
            continue
        preds = [dict(p) for p in preds]
        for p in preds:
            p.pop("id", None)
            if iou_type == "bbox":
                p.pop("segmentation", None)  # else loadRes recomputes boxes from masks
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(preds)
            ev = (BoundaryCOCOeval(coco_gt, coco_dt) if iou_type == "boundary"
                  else COCOeval(coco_gt, coco_dt, iou_type))
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = np.maximum(ev.stats, 0.0) * 100  # -1 (no GT of that size) reads as 0
        out[iou_type] = {k: round(float(v), 2) for k, v in zip(STAT_NAMES, stats)}
    return out


def format_table(rows: dict[str, dict], columns=(("segm", "AP"), ("segm", "AP50"),
                 ("segm", "AP75"), ("segm", "AR100"), ("boundary", "AP"), ("bbox", "AP"),
                 ("bbox", "AP50")),
                 title: str | None = None) -> str:
    """Markdown table: one row per method, columns (iou_type, stat)."""
    names = {"segm": "mask", "bbox": "box", "boundary": "boundary"}
    head = ["method"] + ["AP^B" if (t, s) == ("boundary", "AP") else f"{names[t]} {s}"
                         for t, s in columns]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(columns)) + "|")
    for name, m in rows.items():
        cells = []
        for t, s in columns:
            v = m.get(t, {}).get(s)
            cells.append("-" if v is None else f"{v:.1f}")
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)
