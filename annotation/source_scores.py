"""Which pseudo-label source do the annotators' own points agree with most?

A source (free masks, a SOLO round, a baseline, the point model's predictions: any COCO file
of masks on the same images) is ranked by its mask AP on the annotated images estimated from
the points alone (annotation/point_ap.py): every mask is matched to the annotated objects
by a mask IoU estimated from their points, and a mask that matches no object is a false
positive, so a source that cuts each image into many pieces pays for the pieces that are no
object. The same points also give each source's score threshold (best estimated F1).

Beside it, the share of points labelled right: every synced point is a pixel an annotator
labelled object or background; each annotated instance is compared with the source's mask
whose box overlaps its box most (box IoU >= `min_iou`); an instance the source has no such
mask for reads as all background. That share judges a source at the objects only (extra
masks cost nothing), so it only breaks ties.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from annotation.point_ap import point_ap
from pipeline.data.coco import annotations_by_image, mask_values_at


def point_agreement(points: dict, source: dict, min_iou: float = 0.5) -> dict:
    """Agreement of `source`'s masks with the points of `points` (both COCO dicts)."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in points["images"]}
    by_image = annotations_by_image({"images": points["images"],
                                     "annotations": [a for a in source["annotations"]
                                                     if a["image_id"] in sizes]})
    n = correct = instances = matched = 0
    images = set()
    for a in points["annotations"]:
        labels = np.asarray(a.get("point_labels") or [], np.int64)
        keep = labels >= 0                       # -1: ignored (PointSup)
        if not keep.any():
            continue
        h, w = sizes[a["image_id"]]
        xy = np.asarray(a["point_coords"], np.int64)[keep]
        labels = labels[keep]
        cands = by_image.get(a["image_id"], [])
        values = np.zeros(len(labels), np.uint8)     # no matching mask: all background
        if cands:
            iou = mask_utils.iou([c["bbox"] for c in cands], [a["bbox"]], [0])[:, 0]
            best = int(np.argmax(iou))
            if iou[best] >= min_iou:
                values = mask_values_at(cands[best]["segmentation"], h, w, xy[:, 0], xy[:, 1])
                matched += 1
        instances += 1
        images.add(a["image_id"])
        n += len(labels)
        correct += int((values == labels).sum())
    return {"points": n, "correct": correct, "accuracy": correct / n if n else None,
            "instances": instances, "matched": matched, "images": len(images)}


def rank_sources(points: dict, sources: dict[str, dict], min_iou: float = 0.5) -> list[dict]:
    """One row per source, best first: by the mask AP estimated from the points (`ap`), then
    by the share of points labelled right (sources with no points to judge by last)."""
    rows = [dict(point_agreement(points, coco, min_iou), **point_ap(points, coco), source=name)
            for name, coco in sources.items()]
    return sorted(rows, key=lambda r: (-1.0 if r["ap"] is None else -r["ap"],
                                       -1.0 if r["accuracy"] is None else -r["accuracy"]))


def choose_best(rows: list[dict], min_points: int = 200, min_images: int = 5
                ) -> tuple[dict | None, str]:
    """The source to pre-annotate from (rows ranked by rank_sources), or None and why not:
    too few points or images to tell sources apart (23 points on one image say little of
    the next hundred images), or a tie (two sources with the same estimated AP labelling as
    many points right)."""
    scored = [r for r in rows if r["accuracy"] is not None]
    if not scored:
        return None, "no source has a synced point to be judged by"
    top = scored[0]
    if top["points"] < min_points or top["images"] < min_images:
        return None, (f"{top['points']} points on {top['images']} image(s) so far; at least "
                      f"{min_points} points on {min_images} images are needed "
                      f"(annotation.best_min_points, annotation.best_min_images)")
    ties = [r["source"] for r in scored[1:]
            if r["ap"] == top["ap"] and r["correct"] == top["correct"]]
    if ties:
        return None, (f"{top['source']} ties with {', '.join(ties)} (estimated mask AP "
                      f"{top['ap']}, {top['accuracy']:.1%} of the points)")
    return top, ""
