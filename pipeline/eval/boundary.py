"""Boundary IoU and boundary AP (AP^B) (Cheng et al., "Boundary IoU: Improving Object-Centric
Image Segmentation Evaluation", CVPR 2021).

Sec. 4: the boundary of a mask is the set of its pixels within distance d of its contour,
d = 2% of the image diagonal (at least 1 px); Boundary IoU is the IoU of the two boundary
sets. Sec. 6: boundary AP replaces the mask IoU of COCO's matching by
min(mask IoU, boundary IoU), so a prediction must be right in area *and* along the contour.
The image border counts as contour (the mask is padded with background before erosion).
"""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

DILATION_RATIO = 0.02  # the paper's d, as a fraction of the image diagonal


def boundary_width(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """d in pixels: round(ratio * diagonal), at least 1."""
    return max(1, int(round(ratio * float(np.hypot(height, width)))))


def mask_boundary(mask: np.ndarray, ratio: float = DILATION_RATIO) -> np.ndarray:
    """The mask's pixels within d (chessboard distance) of its contour or the image border."""
    mask = np.asarray(mask, dtype=np.uint8)
    h, w = mask.shape
    d = boundary_width(h, w, ratio)
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    inner = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return (mask > 0) & ~(inner > 0)


def boundary_iou(a: np.ndarray, b: np.ndarray, ratio: float = DILATION_RATIO) -> float:
    """IoU of the two masks' boundary sets (1.0 when both are empty)."""
    ba, bb = mask_boundary(a, ratio), mask_boundary(b, ratio)
    union = np.logical_or(ba, bb).sum()
    return float(np.logical_and(ba, bb).sum() / union) if union else 1.0


class BoundaryCOCOeval(COCOeval):
    """COCOeval on segmentations whose match IoU is min(mask IoU, boundary IoU) (AP^B).

    Everything else (score order, max detections, crowd handling, area ranges) is COCO's."""

    def __init__(self, coco_gt, coco_dt, ratio: float = DILATION_RATIO):
        super().__init__(coco_gt, coco_dt, "segm")
        self.ratio, self._boundaries = ratio, {}

    def _boundary_rle(self, ann: dict) -> dict:
        key = id(ann)  # once per annotation (kept alive by the evaluator); RLE after _prepare
        if key not in self._boundaries:
            m = mask_utils.decode(ann["segmentation"])
            self._boundaries[key] = mask_utils.encode(
                np.asfortranarray(mask_boundary(m, self.ratio).astype(np.uint8)))
        return self._boundaries[key]

    def computeIoU(self, imgId, catId):
        ious = super().computeIoU(imgId, catId)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [a for c in p.catIds for a in self._gts[imgId, c]]
            dt = [a for c in p.catIds for a in self._dts[imgId, c]]
        if len(gt) == 0 or len(dt) == 0:
            return ious
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")  # as COCOeval's
        dt = [dt[i] for i in order[:p.maxDets[-1]]]
        biou = mask_utils.iou([self._boundary_rle(d) for d in dt],
                              [self._boundary_rle(g) for g in gt],
                              [int(g["iscrowd"]) for g in gt])
        return np.minimum(ious, biou)
