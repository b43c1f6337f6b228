"""Boundary IoU / AP^B against boundaries computed by hand."""
import numpy as np
import pytest

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.eval.boundary import boundary_iou, boundary_width, mask_boundary
from pipeline.eval.coco_eval import evaluate, format_table



def square(x0=30, y0=30, side=40, size=100):
    m = np.zeros((size, size), bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_boundary_width_is_two_percent_of_the_diagonal():
    assert boundary_width(100, 100) == 3       # 0.02 * 141.4 = 2.83
    assert boundary_width(480, 640) == 16      # 0.02 * 800
    assert boundary_width(10, 10) == 1         # never below one pixel


def test_boundary_of_a_square_is_its_inner_band():
    b = mask_boundary(square())
    inner = np.zeros_like(b)
    inner[33:67, 33:67] = True                 # d = 3 px inside the 40 x 40 square
    assert b.sum() == 40 * 40 - 34 * 34
    assert np.array_equal(b, square() & ~inner)


def test_image_border_counts_as_contour():
    b = mask_boundary(np.ones((100, 100), bool))
    assert b.sum() == 100 * 100 - 94 * 94


def test_square_shifted_by_one_pixel_mask_iou_high_boundary_iou_low():
    a, b = square(), square(x0=31)
    mask_iou = (a & b).sum() / (a | b).sum()
    assert mask_iou == pytest.approx(1560 / 1640)           # 0.95
    # by hand: rings of 444 px each; intersection = 40 x 39 overlap minus the union of the
    # two 34 x 34 interiors (34 x 35) = 1560 - 1190 = 370; union 444 + 444 - 370 = 518
    assert boundary_iou(a, b) == pytest.approx(370 / 518)  # 0.71


def test_boundary_ap_uses_min_of_mask_and_boundary_iou():
    gt_mask = square()
    images = [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}]
    gt = make_coco(images, [mask_to_annotation(gt_mask, 1, category_id=1)],
                   [{"id": 1, "name": "thing"}])
    pred = [mask_to_annotation(square(x0=31), 1, score=0.9)]
    m = evaluate(gt, pred)
    assert m["segm"]["AP75"] == pytest.approx(100.0)        # mask IoU 0.95 >= 0.75
    assert m["boundary"]["AP50"] == pytest.approx(100.0)    # min(0.95, 0.71) >= 0.5
    assert m["boundary"]["AP75"] == 0.0                     # 0.71 < 0.75
    # thresholds 0.5 .. 0.95: mask IoU passes 0.5 .. 0.95 (10 of 10), boundary 0.5 .. 0.7 (5)
    assert m["segm"]["AP"] == pytest.approx(100.0)
    assert m["boundary"]["AP"] == pytest.approx(50.0)
    perfect = evaluate(gt, [mask_to_annotation(gt_mask, 1, score=0.9)])
    assert perfect["boundary"]["AP"] == pytest.approx(100.0)
    assert "| AP^B |" in format_table({"x": m})


def test_boundary_does_not_reward_a_good_boundary_with_a_bad_area():
    """A ring prediction shares the square's boundary but not its area: min() keeps it out."""
    gt_mask = square()
    ring = mask_boundary(gt_mask)
    images = [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}]
    gt = make_coco(images, [mask_to_annotation(gt_mask, 1, category_id=1)],
                   [{"id": 1, "name": "thing"}])
    assert boundary_iou(ring, gt_mask) > 0.9
    m = evaluate(gt, [mask_to_annotation(ring, 1, score=0.9)])
    assert m["boundary"]["AP50"] == 0.0                     # mask IoU 444 / 1600 < 0.5
