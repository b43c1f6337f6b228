"""What an annotator who knows the truth must do to a pre-annotated task, and how right the
synced result is: the plan a scripted browser carries out (`browser`) and the
scores of a simulated annotation run (`bench/annotation_session.py`).

Ground truth plays the annotator: a pre-placed box that matches no object (box IoU < 0.5,
one box per object) is deleted with its points; a point on a kept box whose label disagrees
with that object's mask is flipped; an object no box matches gets a new box with N points
placed uniformly in it (PointSup's protocol), each labelled from the mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from annotation.protocol import BACKGROUND, OBJECT, point_owner, to_pixels


def match_boxes(boxes: list, truth: list, threshold: float = 0.5) -> dict[int, int]:
    """Greedy one-to-one matching of xyxy boxes by IoU (highest first): {box index: truth
    index}."""
    if not boxes or not truth:
        return {}
    xywh = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in [*boxes, *truth]]
    iou = mask_utils.iou(xywh[:len(boxes)], xywh[len(boxes):], [0] * len(truth))
    pairs = sorted(((float(iou[i, j]), i, j) for i in range(len(boxes))
                    for j in range(len(truth))), reverse=True)
    out, used = {}, set()
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def label_at(mask: np.ndarray, x: float, y: float) -> str:
    h, w = mask.shape
    return OBJECT if mask[min(int(y), h - 1), min(int(x), w - 1)] else BACKGROUND


@dataclass
class Drawn:
    """A box the annotator draws for a missed object, and its points: placed by the
    annotator (labelled right), or placed and labelled by the assistant (`assisted`: known
    once it answers, `resolve`), then its wrong labels flipped."""
    box: tuple
    mask: np.ndarray = field(repr=False)
    points: list[tuple[float, float, str]] = field(default_factory=list)
    assisted: bool = False
    flips: list[tuple[float, float, str]] = field(default_factory=list)

    def resolve(self, given: list[tuple[float, float, str]]) -> None:
        """The assistant's points for this box: the wrong labels become flips."""
        self.points = [(x, y, label_at(self.mask, x, y)) for x, y, _ in given]
        self.flips = [r for g, r in zip(given, self.points) if g[2] != r[2]]

    @property
    def edits(self) -> int:
        return 1 + (len(self.flips) if self.assisted else len(self.points))


@dataclass
class Plan:
    """The edits of one task, in image pixels."""
    delete: dict[str, tuple] = field(default_factory=dict)   # box id -> its xyxy box
    relabel: list[tuple[str, float, float, str]] = field(default_factory=list)  # id, x, y, new
    draw: list[Drawn] = field(default_factory=list)
    kept_points: int = 0          # pre-placed points on kept boxes (checked, right or flipped)

    @property
    def edits(self) -> int:
        """Deleted boxes + flipped points + drawn boxes + points placed or flipped on them."""
        return len(self.delete) + len(self.relabel) + sum(d.edits for d in self.draw)

    def seconds(self, cost) -> float:
        """Annotator seconds by the project's cost model (`compare.cost`): a drawn box
        `box_s`, every other edit (a point placed or flipped, a box deleted: an assumption,
        no published figure) `point_s`."""
        drawn = len(self.draw)
        return float(cost.box_s) * drawn + float(cost.point_s) * (self.edits - drawn)


def regions(result: list[dict], width: int, height: int):
    """A Label Studio result list -> ({box id: xyxy}, {point id: (x, y, label)}) in pixels."""
    boxes, points = {}, {}
    for r in result:
        v = r["value"]
        if r["type"] == "rectanglelabels":
            x, y, w, h = to_pixels(v, width, height)
            boxes[r["id"]] = (x, y, x + w, y + h)
        elif r["type"] == "keypointlabels":
            points[r["id"]] = (*to_pixels(v, width, height, ("x", "y")), v["keypointlabels"][0])
    return boxes, points


def plan_task(result: list[dict], masks: list[np.ndarray], width: int, height: int,
              n_points: int, rng: np.random.Generator, match_iou: float = 0.5,
              assisted: bool = False) -> Plan:
    """The edits that turn a task's pre-annotation into the truth `masks` (bool (h, w)).

    assisted: boxes for missed objects are drawn for the labelling assistant, whose points
    are checked once it answers (`Drawn.resolve`); otherwise the annotator places N points
    uniformly in the box."""
    boxes, points = regions(result, width, height)
    masks = [m for m in masks if m.any()]
    truth = [mask_box(m) for m in masks]
    ids = list(boxes)
    matched = {ids[i]: j for i, j in match_boxes([boxes[k] for k in ids], truth,
                                                 match_iou).items()}
    plan = Plan(delete={k: boxes[k] for k in ids if k not in matched})
    for pid, (x, y, lab) in points.items():
        owner = point_owner(pid)
        if owner not in matched:
            continue                      # goes with its deleted box
        plan.kept_points += 1
        want = label_at(masks[matched[owner]], x, y)
        if want != lab:
            plan.relabel.append((pid, x, y, want))
    for j in sorted(set(range(len(masks))) - set(matched.values())):
        box = truth[j]
        if assisted:
            plan.draw.append(Drawn(box, masks[j], assisted=True))
            continue
        pts = [(box[0] + rng.random() * (box[2] - box[0]),
                box[1] + rng.random() * (box[3] - box[1])) for _ in range(n_points)]
        plan.draw.append(Drawn(box, masks[j], [(x, y, label_at(masks[j], x, y)) for x, y in pts]))
    return plan


def carried_out(result: list[dict], plan: Plan, width: int, height: int,
                label: str = "object") -> list[dict]:
    """The result list an annotator submits after doing every edit of `plan` exactly (what
    the scripted browser does in the UI): deleted boxes gone (their points left for the sync
    to drop, as Label Studio leaves them), wrong labels flipped, each drawn box added with
    its points (ids `<box>_a_p<j>`, tied to it as the assistant's are). Read by
    `annotation.protocol.results_to_instances`, as `make annotate-sync` reads an export."""
    from annotation.protocol import ASSISTED, box_result, point_result
    flips = {pid: new for pid, _, _, new in plan.relabel}
    out = []
    for r in result:
        if r["id"] in plan.delete:
            continue
        if r["id"] in flips:
            r = {**r, "value": {**r["value"], "keypointlabels": [flips[r["id"]]]}}
        out.append(r)
    for k, d in enumerate(plan.draw):
        rid = f"drawn{k}{ASSISTED}"
        out += [point_result(x, y, width, height, lab == OBJECT, f"{rid}_p{j}", rid)
                for j, (x, y, lab) in enumerate(d.points)]
        x0, y0, x1, y1 = d.box
        out.append(box_result([x0, y0, x1 - x0, y1 - y0], width, height, label, rid))
    return out


def score_synced(synced: list[dict], masks: list[np.ndarray], match_iou: float = 0.5) -> dict:
    """Synced instances (COCO bbox + point_coords/point_labels) against the truth: boxes
    matching an object, and the share of points whose label agrees with that object's mask
    (points of unmatched boxes count as wrong)."""
    masks = [m for m in masks if m.any()]
    boxes = [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
              a["bbox"][1] + a["bbox"][3]) for a in synced]
    matched = match_boxes(boxes, [mask_box(m) for m in masks], match_iou)
    right = total = 0
    for i, a in enumerate(synced):
        for (x, y), lab in zip(a["point_coords"], a["point_labels"]):
            total += 1
            if i in matched:   # point_coords are pixel indices: read at the pixel centre
                right += (label_at(masks[matched[i]], x + 0.5, y + 0.5) == OBJECT) == bool(lab)
    return {"boxes": len(synced), "boxes_matched": len(matched), "objects": len(masks),
            "points": total, "points_right": right}
