"""PointSup annotations (Cheng et al., CVPR 2022, Sec. 3): N points per instance, labelled by mask.

Output matches detectron2's PointSup project: each annotation keeps `bbox`, `category_id`
and gains `point_coords` ([[x, y], ...], integer pixel indices) and `point_labels` (1 = object,
0 = background); `segmentation` is removed.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.coco import mask_values_at


def box_extent(bbox, h: int, w: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels [x0, x1) x [y0, y1) a COCO box covers, inside the image
    (at least one pixel each way)."""
    x0, y0 = int(np.floor(bbox[0])), int(np.floor(bbox[1]))
    x1 = min(int(np.ceil(bbox[0] + bbox[2])), w)
    y1 = min(int(np.ceil(bbox[1] + bbox[3])), h)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def box_pixels(bbox, n: int, h: int, w: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n pixel indices uniform over the box (PointSup's sampling), inside the image."""
    x0, y0, x1, y1 = box_extent(bbox, h, w)
    xs = rng.integers(x0, x1, n)
    ys = rng.integers(y0, y1, n)
    return xs, ys


def as_points(xs, ys, labels) -> tuple[list, list]:
    return [[int(x), int(y)] for x, y in zip(xs, ys)], np.asarray(labels).astype(int).tolist()


def has_points(coco: dict) -> bool:
    """Every annotation carries PointSup's point_coords (a points file, a Label Studio sync):
    nothing to simulate."""
    anns = coco["annotations"]
    return bool(anns) and all("point_coords" in a for a in anns)


def points_from_masks(coco: dict, n: int = 10, seed: int = 0, keep_masks: bool = False) -> dict:
    """A copy of `coco` with n points per instance (deterministic in seed)."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    rng = np.random.default_rng(seed)
    anns = []
    for a in sorted(coco["annotations"], key=lambda a: a["id"]):
        if a.get("iscrowd", 0):
            continue  # a crowd region gets no points and is no instance (PointSup's mapper)
        h, w = sizes[a["image_id"]]
        xs, ys = box_pixels(a["bbox"], n, h, w, rng)
        coords, labels = as_points(xs, ys, mask_values_at(
            a["segmentation"], h, w, np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)))
        b = {k: v for k, v in a.items() if keep_masks or k != "segmentation"}
        b.update(point_coords=coords, point_labels=labels)
        anns.append(b)
    out = dict(coco)
    out["annotations"] = anns
    out["info"] = dict(coco.get("info", {}), points_per_instance=n, point_seed=seed)
    return out
