import numpy as np
import pytest

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.eval.baselines import colour_components, whole_image
from pipeline.eval.coco_eval import evaluate, format_table


def gt_dataset():
    masks = []
    for y, x in ((2, 2), (20, 24)):
        m = np.zeros((40, 40), bool)
        m[y:y + 12, x:x + 10] = True
        masks.append(m)
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}]
    return make_coco(images, [mask_to_annotation(m, 1, category_id=2) for m in masks],
                     [{"id": 2, "name": "thing"}]), masks


def test_perfect_predictions_score_100_class_agnostic():
    gt, masks = gt_dataset()
    preds = [mask_to_annotation(m, 1, category_id=1, score=0.9) for m in masks]
    m = evaluate(gt, preds)
    assert m["segm"]["AP"] == pytest.approx(100.0)
    assert m["bbox"]["AP50"] == pytest.approx(100.0)


def test_half_recall_and_empty_predictions():
    gt, masks = gt_dataset()
    m = evaluate(gt, [mask_to_annotation(masks[0], 1, score=0.9)])
    assert m["segm"]["AR100"] == pytest.approx(50.0)
    assert evaluate(gt, [])["segm"]["AP"] == 0.0


def test_shifted_mask_fails_at_high_iou():
    gt, masks = gt_dataset()
    shifted = [np.roll(m, 3, axis=1) for m in masks]  # IoU 7/13 ~ 0.54
    m = evaluate(gt, [mask_to_annotation(s, 1, score=0.5) for s in shifted])
    assert m["segm"]["AP50"] == pytest.approx(100.0)
    assert m["segm"]["AP75"] == 0.0


def test_baselines_on_flat_colour_objects():
    img = np.full((40, 40, 3), 30, np.uint8)
    img[5:20, 5:20] = (250, 10, 10)
    img[25:35, 22:38] = (10, 250, 10)
    props = colour_components(img, k=3)
    gt = np.zeros((40, 40), bool)
    gt[5:20, 5:20] = True
    best = max((m & gt).sum() / (m | gt).sum() for m, _ in props)
    assert best > 0.8
    assert whole_image(img)[0][0].all()


def test_table_has_rows_and_columns():
    t = format_table({"a": {"segm": {"AP": 1.234}, "bbox": {"AP": 2.0}}}, title="T")
    assert "| a | 1.2 |" in t and "### T" in t


def test_threshold_and_watershed_baselines():
    """Otsu + components finds separate discs; the watershed splits two touching ones."""
    from pipeline.eval.baselines import threshold_components, watershed_split
    yy, xx = np.mgrid[0:80, 0:120]
    a = (yy - 40) ** 2 + (xx - 35) ** 2 <= 15 ** 2
    b = (yy - 40) ** 2 + (xx - 63) ** 2 <= 15 ** 2      # touches a (centres 28 px apart)
    c = (yy - 40) ** 2 + (xx - 100) ** 2 <= 10 ** 2
    img = np.full((80, 120, 3), 40, np.uint8)
    img[a | b | c] = 220

    def best_iou(props, gt):
        return max((m & gt).sum() / (m | gt).sum() for m, _ in props)

    comps = threshold_components(img)
    assert best_iou(comps, c) > 0.9 and best_iou(comps, a | b) > 0.9   # a, b merged
    split = watershed_split(img)
    assert best_iou(split, a) > 0.8 and best_iou(split, b) > 0.8 and best_iou(split, c) > 0.9
    dark_objects = threshold_components(255 - img)      # polarity: the minority side
    assert best_iou(dark_objects, c) > 0.9
    assert threshold_components(np.full((20, 20, 3), 9, np.uint8)) == []
