"""Annotation cost of each supervision level, in seconds per instance.

Defaults from the papers: a COCO polygon mask 79.2 s per instance, a box 7 s (PointSup,
Sec. 5, after Bearman et al.); box + 10 points is about 5x cheaper than a polygon mask, which
puts a point at ~0.9 s. A measured Label Studio `lead_time` replaces the model when present.
"""
from __future__ import annotations


def seconds_per_instance(supervision: str, cost, points: int = 0,
                         measured: float | None = None) -> float:
    if measured is not None:
        return float(measured)
    if supervision == "full":
        return float(cost.polygon_mask_s)
    if supervision == "points":
        return float(cost.box_s) + points * float(cost.point_s)
    if supervision in ("free_masks", "solo", "none"):
        return 0.0
    raise ValueError(f"no cost model for supervision {supervision!r}")


def measured_lead_time(coco: dict) -> float | None:
    """Mean seconds per instance from Label Studio lead times stored on annotations."""
    times = [a["lead_time"] for a in coco.get("annotations", []) if a.get("lead_time")]
    return sum(times) / len(times) if times else None
