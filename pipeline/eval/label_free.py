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


def describe(coco: dict) -> dict:
    """Counts, score quantiles, the share of masks touching the border, the median share of
    an image its masks cover (union) and the median mask size, over the images of `coco`."""
    by = annotations_by_image(coco)
    images = [im for im in coco["images"] if im.get("height") and im.get("width")]
    counts, border, cover, size, scores = [], [], [], [], []
    for im in images:
        h, w, anns = im["height"], im["width"], by.get(im["id"], [])
        counts.append(len(anns))
        border += [touches_border(a, h, w) for a in anns]
        size += [a.get("area", 0.0) / (h * w) for a in anns]
        scores += [float(a["score"]) for a in anns if "score" in a]
        if anns:
            union = mask_utils.merge(_rles(anns, h, w), intersect=False)
            cover.append(float(mask_utils.area(union)) / (h * w))
    counts = np.asarray(counts or [0])
    q = (np.quantile(scores, [0.1, 0.5, 0.9]).round(3).tolist() if scores else [None] * 3)
    return {"images": len(images), "masks": int(counts.sum()),
            "empty_images": float(np.mean(counts == 0)) if images else 0.0,
            "masks_per_image": float(counts.mean()), "max_per_image": int(counts.max()),
            "score_p10": q[0], "score_p50": q[1], "score_p90": q[2],
            "border": float(np.mean(border)) if border else 0.0,
            "coverage": float(np.median(cover)) if cover else 0.0,
            "size": float(np.median(size)) if size else 0.0}


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


def warnings(stats: dict[str, dict], agree: dict[str, float | None], limits) -> list[str]:
    """One line per sign that the pseudo-labels are colour regions or noise, not objects.
    `stats`: describe() per source; `agree`: agreement between named pairs of sources;
    `limits`: report.warn (border, coverage, agreement)."""
    out = []
    for name, s in stats.items():
        if not s["masks"]:
            continue
        if s["border"] > limits.border and s["coverage"] > limits.coverage:
            out.append(f"{name}: {s['border']:.0%} of the masks run into the image border and "
                       f"they cover {s['coverage']:.0%} of a median image: they tile the image "
                       f"like colour regions rather than pick out objects")
        elif s["border"] > limits.border:
            out.append(f"{name}: {s['border']:.0%} of the masks run into the image border "
                       f"(objects lie inside the image): more background pieces than objects")
        elif s["coverage"] > limits.coverage:
            out.append(f"{name}: the masks cover {s['coverage']:.0%} of a median image: "
                       f"regions of the whole image rather than objects")
    for pair, value in agree.items():
        if value is not None and value < limits.agreement:
            out.append(f"{pair} agree on {value:.0%} of their masks (IoU >= 0.5): the rounds "
                       f"did not settle on the same objects")
    return out
