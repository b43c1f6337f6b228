"""Mask AP estimated from the annotators' points alone: false positives count.

On an annotated image every object has a box and points labelled object / background,
placed uniformly in the box (PointSup's protocol, Cheng et al., CVPR 2022, Sec. 3; what
`pipeline/data/points.py` simulates). That is enough to estimate what COCO mask AP measures
(Lin et al., ECCV 2014: masks matched to objects greedily by score at mask IoU 0.50:0.95,
each mask matching no object a false positive, each object no mask matches a miss):

- **mask IoU from points** (`point_iou`): the box is split in two strata whose areas are
  known exactly, its pixels inside the mask and outside it; the points falling in each
  stratum estimate the object's share of it (post-stratified estimation, Cochran,
  "Sampling Techniques", 3rd ed., Sec. 5A.9). Object pixels in the mask = area(mask and box)
  x share inside; object area = that + area(box minus mask) x share outside; the mask's area
  (also outside the box, where the object has no pixel) is exact. A stratum without a point
  takes the box's overall share. A mask equal to the object reads IoU 1 whatever the points;
  a mask reaching beyond the box pays for it exactly.
- **AP** (`point_ap`): COCOeval's own matching, precision/recall and 101-point AP with these
  IoUs, over the annotated images only (the annotator boxed every object on them), so a
  source that cuts each image into many pieces pays for the pieces that are no object.
- **the score threshold** for pre-annotation: the one at which the masks kept give the best
  F1 at (estimated) IoU 0.5 on the annotated images, chosen by the points as well.

Objects without a labelled point are ignored (a mask matching one counts neither way).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.cocoeval import COCOeval

from pipeline.data.coco import decode_segmentation
from pipeline.data.points import box_extent
from pipeline.eval.coco_eval import _coco_api


def point_iou(mask: np.ndarray, obj: dict, h: int, w: int) -> float:
    """Mask IoU of a dense HxW `mask` with the object annotated by `obj`'s box and points,
    estimated from the points (see the module docstring)."""
    x0, y0, x1, y1 = box_extent(obj["bbox"], h, w)
    labels = np.asarray(obj.get("point_labels") or [], np.int64)
    xy = np.asarray(obj.get("point_coords") or [], np.int64).reshape(-1, 2)
    inside = ((labels >= 0) & (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0)
              & (xy[:, 1] < y1) & (xy[:, 0] < w) & (xy[:, 1] < h)) if len(labels) \
        else np.zeros(0, bool)
    labels, xy = labels[inside], xy[inside]
    area = float(mask.sum())
    if not len(labels) or area == 0:
        return 0.0
    in_mask = mask[xy[:, 1], xy[:, 0]].astype(bool)
    overall = labels.mean()

    def share(sel):            # the object's share of a stratum, from its points
        return labels[sel].mean() if sel.any() else overall

    a_in = float(mask[y0:y1, x0:x1].sum())
    a_out = float((x1 - x0) * (y1 - y0)) - a_in
    inter = a_in * share(in_mask)
    union = area + a_out * share(~in_mask)
    return float(inter / union) if union > 0 else 0.0


class PointIoUCOCOeval(COCOeval):
    """COCOeval whose mask IoUs are estimated from the objects' points (`point_iou`);
    everything else (score order, max detections, matching, accumulation) is COCO's."""

    def __init__(self, coco_gt, coco_dt, sizes: dict[int, tuple[int, int]]):
        super().__init__(coco_gt, coco_dt, "bbox")   # boxes only prepare; IoUs are ours
        self.params.useCats = 0
        self.sizes = sizes

    def computeIoU(self, imgId, catId):
        p = self.params
        gt = [a for c in p.catIds for a in self._gts[imgId, c]]
        dt = [a for c in p.catIds for a in self._dts[imgId, c]]
        if not gt or not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")  # as COCOeval's
        dt = [dt[i] for i in order[:p.maxDets[-1]]]
        h, w = self.sizes[imgId]
        ious = np.zeros((len(dt), len(gt)))
        for i, d in enumerate(dt):
            m = decode_segmentation(d["segmentation"], h, w)
            for j, g in enumerate(gt):
                ious[i, j] = point_iou(m, g, h, w)
        return ious


def point_ap(points: dict, source: dict) -> dict:
    """Estimated mask AP (percent: `ap`, `ap50`) of `source`'s masks on the images of
    `points` (COCO with point_coords/point_labels; every object of those images annotated),
    and the score `threshold` with the best estimated F1 at IoU 0.5 (`f1`, with the masks
    kept there: `kept`, `false_positives`)."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in points["images"]}
    out = {"ap": None, "ap50": None, "threshold": None, "f1": None, "kept": 0,
           "false_positives": 0}
    gts = []
    for i, a in enumerate(points["annotations"], start=1):
        labelled = any(int(v) >= 0 for v in a.get("point_labels") or [])
        x, y, bw, bh = a["bbox"]
        gts.append(dict(a, id=i, category_id=1, area=float(a.get("area") or bw * bh),
                        iscrowd=0 if labelled else 1))
    if not any(not g["iscrowd"] for g in gts):
        return out
    dts = [dict(d, category_id=1, score=float(d.get("score", 1.0)))
           for d in source["annotations"] if d["image_id"] in sizes and "segmentation" in d]
    for d in dts:
        d.pop("id", None)
    if not dts:
        return dict(out, ap=0.0, ap50=0.0)
    coco_gt = _coco_api({"images": points["images"], "annotations": gts,
                         "categories": [{"id": 1, "name": "object"}]})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = PointIoUCOCOeval(coco_gt, coco_gt.loadRes(dts), sizes)
        ev.params.imgIds = sorted(sizes)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.maximum(ev.stats, 0.0) * 100
    out.update(ap=round(float(stats[0]), 2), ap50=round(float(stats[1]), 2))
    out.update(best_f1(ev))
    return out


def best_f1(ev: COCOeval) -> dict:
    """The score threshold whose kept masks give the best F1 at IoU 0.5 (COCOeval's
    matches over all areas; greedy by score, so the masks above a threshold match as they
    would alone)."""
    n_img = len(ev.params.imgIds)
    rows = [e for e in ev.evalImgs[:n_img] if e is not None]     # area range 'all'
    n_gt = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in rows)
    scores = np.concatenate([np.asarray(e["dtScores"], float) for e in rows] or [[]])
    tp = np.concatenate([np.asarray(e["dtMatches"])[0] > 0 for e in rows] or [[]]).astype(bool)
    ign = np.concatenate([np.asarray(e["dtIgnore"])[0] for e in rows] or [[]]).astype(bool)
    scores, tp = scores[~ign], tp[~ign]
    if not len(scores) or not n_gt:
        return {}
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], tp[order]
    ctp = np.cumsum(tp)
    f1 = 2 * ctp / (np.arange(1, len(tp) + 1) + n_gt)
    last = np.r_[scores[1:] != scores[:-1], True]     # a threshold keeps every equal score
    k = int(np.argmax(np.where(last, f1, -1.0)))
    return {"threshold": float(scores[k]), "f1": round(float(f1[k]), 4), "kept": k + 1,
            "false_positives": int(k + 1 - ctp[k])}
