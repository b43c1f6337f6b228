"""Mask AP estimated from points: false positives count, IoU estimates hold on known cases."""
import numpy as np
import pytest

from annotation.point_ap import point_ap, point_iou
from annotation.source_scores import rank_sources
from pipeline.data.coco import make_coco, mask_to_annotation

H = W = 40


def _images(n=1):
    return [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, n + 1)]


def _square(x0, y0, size):
    m = np.zeros((H, W), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def _object(image_id=1):
    """A 10x10 square at (10, 10), boxed tightly, with points on a 2-px grid over its box
    widened to (8, 8, 14, 14): the inner ones object, the ring background."""
    xs, ys = np.meshgrid(np.arange(8, 22, 2), np.arange(8, 22, 2))
    xs, ys = xs.ravel(), ys.ravel()
    labels = _square(10, 10, 10)[ys, xs].astype(int)
    return {"image_id": image_id, "category_id": 1, "bbox": [8, 8, 14, 14],
            "point_coords": np.c_[xs, ys].tolist(), "point_labels": labels.tolist()}


def _points(n=1):
    return make_coco(_images(n), [_object(i) for i in range(1, n + 1)])


def _source(*masks_scores, n=1):
    return make_coco(_images(n), [mask_to_annotation(m, i, 1, score=s)
                                  for i in range(1, n + 1) for m, s in masks_scores])


def test_iou_from_points_on_known_masks():
    obj = _object()
    assert point_iou(_square(10, 10, 10), obj, H, W) == pytest.approx(1.0)
    # the object plus 100 pixels outside its box: the excess is known exactly
    spill = _square(10, 10, 10) | _square(28, 28, 10)
    assert point_iou(spill, obj, H, W) == pytest.approx(100 / 200)
    # the whole box: inside it, the points' share of object (25 of 49) is the estimate
    box = _square(8, 8, 14)
    assert point_iou(box, obj, H, W) == pytest.approx(196 * 25 / 49 / 196)
    assert point_iou(_square(30, 30, 5), obj, H, W) == 0.0           # elsewhere
    assert point_iou(np.zeros((H, W), bool), obj, H, W) == 0.0       # empty


def test_a_source_with_extra_masks_loses_to_the_same_source_without():
    exact = (_square(10, 10, 10), 0.9)
    extra = [(_square(25, 25, 8), 0.95), (_square(0, 30, 6), 0.95)]   # no object there
    clean, noisy = _source(exact, n=3), _source(exact, *extra, n=3)
    assert point_ap(_points(3), clean)["ap"] == pytest.approx(100.0)
    assert point_ap(_points(3), noisy)["ap"] < 60.0
    rows = rank_sources(_points(3), {"noisy": noisy, "clean": clean})
    assert [r["source"] for r in rows] == ["clean", "noisy"]
    # the share of points labelled right cannot tell them apart: extras are never looked at
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == 1.0


def test_many_pieces_lose_to_one_good_mask():
    """Colour components: a piece near the object plus the rest of the image in pieces."""
    pieces = [(_square(x, y, 10), 1.0) for x in range(0, 40, 10) for y in range(0, 40, 10)]
    good = (_square(11, 11, 9), 0.5)                        # IoU 0.81, a low score
    rows = rank_sources(_points(2), {"pieces": _source(*pieces, n=2),
                                     "good": _source(good, n=2)})
    assert rows[0]["source"] == "good" and rows[1]["ap"] < rows[0]["ap"]


def test_the_threshold_keeps_the_confident_masks_that_match():
    got = point_ap(_points(2), _source((_square(10, 10, 10), 0.8), (_square(28, 28, 8), 0.3),
                                       n=2))
    assert got["threshold"] == 0.8 and got["kept"] == 2 and got["false_positives"] == 0
    assert got["f1"] == 1.0 and got["ap"] == pytest.approx(100.0)  # low extras: AP unmoved
    low = point_ap(_points(2), _source((_square(28, 28, 8), 0.9), (_square(10, 10, 10), 0.2),
                                       n=2))
    assert low["threshold"] == 0.2 and low["false_positives"] == 2 \
        and low["f1"] == pytest.approx(2 / 3, abs=1e-4)      # precision 1/2, recall 1


def test_no_masks_and_no_points():
    assert point_ap(_points(), make_coco(_images(), []))["ap"] == 0.0
    unlabelled = make_coco(_images(), [dict(_object(), point_labels=[-1] * 49)])
    assert point_ap(unlabelled, _source((_square(10, 10, 10), 0.9)))["ap"] is None
