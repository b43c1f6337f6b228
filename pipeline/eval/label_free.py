"""What a set of pseudo-labels looks like without ground truth, and when it looks wrong.

Counts, scores and where the masks lie, per source (free masks, SOLO rounds, baselines), and
the agreement between two sources. From these, warnings for the failures seen on images the
chain was not tuned on (issue 28): a colour-graph cut that splits the image into colour
regions (masks that tile the image and run into its border), masks on images that hold no
object (flat or noisy images: a partition of nothing), and rounds that disagree.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.data.coco import annotations_by_image, pycocotools_rle


def _rles(anns: list[dict], h: int, w: int) -> list[dict]:
    out = []
    for a in anns:
        seg = a["segmentation"]
        if isinstance(seg, list):
            out.append(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
        elif isinstance(seg.get("counts"), list):
            out.append(mask_utils.frPyObjects(seg, h, w))
        else:
            out.append(pycocotools_rle(seg))
    return out


def touches_border(a: dict, h: int, w: int, margin: float = 1.0) -> bool:
    """Whether the mask reaches the image's edge (its box does: box edges are mask pixels)."""
    x, y, bw, bh = a["bbox"]
    return x <= margin or y <= margin or x + bw >= w - margin or y + bh >= h - margin


def describe(coco: dict, confident: float = 0.9, large: float = 0.25) -> dict:
    """Counts and score quantiles over the images of `coco`; the share of masks scoring >=
    `confident` (what SOLO learns from: solo.targets_min_score), and, of those confident
    masks, the share touching the border, the median share of an image they cover (union)
    and their median size, and the share of them that are large regions (>= `large` of the
    image) running into the border: table tops, walls, sky. A colour graph cuts every image
    into regions, objects or not: the confident masks are where objects and regions part."""
    by = annotations_by_image(coco)
    images = [im for im in coco["images"] if im.get("height") and im.get("width")]
    counts, border, cover, size, scores, sure, regions = [], [], [], [], [], 0, 0
    for im in images:
        h, w, anns = im["height"], im["width"], by.get(im["id"], [])
        counts.append(len(anns))
        scores += [float(a["score"]) for a in anns if "score" in a]
        anns = [a for a in anns if float(a.get("score", 1.0)) >= confident]
        sure += len(anns)
        border += [touches_border(a, h, w) for a in anns]
        size += [a.get("area", 0.0) / (h * w) for a in anns]
        regions += sum(touches_border(a, h, w) and a.get("area", 0.0) >= large * h * w
                       for a in anns)
        if anns:
            union = mask_utils.merge(_rles(anns, h, w), intersect=False)
            cover.append(float(mask_utils.area(union)) / (h * w))
    counts = np.asarray(counts or [0])
    q = (np.quantile(scores, [0.1, 0.5, 0.9]).round(3).tolist() if scores else [None] * 3)
    return {"images": len(images), "masks": int(counts.sum()),
            "empty_images": float(np.mean(counts == 0)) if images else 0.0,
            "masks_per_image": float(counts.mean()), "max_per_image": int(counts.max()),
            "score_p10": q[0], "score_p50": q[1], "score_p90": q[2],
            "confident_at": confident,
            "confident": float(sure / counts.sum()) if counts.sum() else 0.0,
            "border": float(np.mean(border)) if border else 0.0,
            "coverage": float(np.median(cover)) if cover else 0.0,
            "size": float(np.median(size)) if size else 0.0,
            "regions": float(regions / sure) if sure else 0.0}


def agreement(a: dict, b: dict, iou: float = 0.5) -> float | None:
    """The share of masks, of both sources together, that the other source also has (mask
    IoU >= iou on the same image); None when neither has a mask."""
    by_a, by_b = annotations_by_image(a), annotations_by_image(b)
    sizes = {im["id"]: (im.get("height"), im.get("width")) for im in a["images"]}
    matched = total = 0
    for image_id, (h, w) in sizes.items():
        xs, ys = by_a.get(image_id, []), by_b.get(image_id, [])
        total += len(xs) + len(ys)
        if not xs or not ys or not h:
            continue
        m = np.atleast_2d(mask_utils.iou(_rles(xs, h, w), _rles(ys, h, w), [0] * len(ys)))
        matched += int((m.max(1) >= iou).sum()) + int((m.max(0) >= iou).sum())
    return matched / total if total else None


def warnings(stats: dict[str, dict], agree: dict[str, float | None], limits,
             stand_out=("free masks",)) -> list[str]:
    """One line per sign that the pseudo-labels are colour regions or noise, not objects.
    `stats`: describe() per source; `agree`: agreement between named pairs of sources;
    `limits`: report.warn (confident, border, coverage, regions, agreement). The share of
    confident masks is judged for the sources in `stand_out` only, whose score says how a
    mask stands out from its surroundings (the free masks' contrast); SOLO's scores are
    low early in training whatever the images hold."""
    out = []
    for name, s in stats.items():
        if not s["masks"]:
            continue
        at = s["confident_at"]
        if name in stand_out and s["confident"] < limits.confident:
            out.append(f"{name}: {s['confident']:.0%} of the masks score >= {at:g}: no region "
                       f"stands out from its surroundings as objects do (flat, noisy or evenly "
                       f"textured images, or objects like their background)")
        elif s["border"] > limits.border and s["coverage"] > limits.coverage:
            out.append(f"{name}: {s['border']:.0%} of the masks scoring >= {at:g} run into the "
                       f"image border and they cover {s['coverage']:.0%} of a median image: "
                       f"they tile the image like colour regions rather than pick out objects")
        elif s["regions"] > limits.regions:
            out.append(f"{name}: {s['regions']:.0%} of the masks scoring >= {at:g} are large "
                       f"regions (>= 25% of the image) running into its border: surfaces such "
                       f"as table tops, walls or sky rather than objects")
    for pair, value in agree.items():
        if value is not None and value < limits.agreement:
            out.append(f"{pair} agree on {value:.0%} of their masks (IoU >= 0.5): the rounds "
                       f"did not settle on the same objects")
    return out
