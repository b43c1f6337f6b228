"""Pseudo-label sources ranked by how many of the annotators' points their masks get right."""
import numpy as np

from annotation.source_scores import choose_best, point_agreement, rank_sources
from pipeline.data.coco import make_coco, mask_to_annotation


def _image():
    return {"id": 1, "file_name": "a.png", "height": 40, "width": 40}


def _points():
    """One object: a 10x10 square at (10, 10); 3 object points inside, 2 background outside
    the square but inside its (looser) box, 1 ignored point."""
    a = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 14, 14],
         "point_coords": [[12, 12], [15, 15], [18, 18], [9, 9], [21, 21], [30, 30]],
         "point_labels": [1, 1, 1, 0, 0, -1]}
    return make_coco([_image()], [a])


def _source(x0, size, image_id=1):
    m = np.zeros((40, 40), bool)
    m[x0:x0 + size, x0:x0 + size] = True
    return make_coco([_image()], [mask_to_annotation(m, image_id, 1, score=0.9)])


def test_agreement_counts_points_the_mask_labels_like_the_annotator():
    exact = point_agreement(_points(), _source(10, 10))
    assert exact == {"points": 5, "correct": 5, "accuracy": 1.0, "instances": 1, "matched": 1,
                     "images": 1}
    spill = point_agreement(_points(), _source(8, 14))    # covers the background points too
    assert spill["correct"] == 3 and spill["matched"] == 1
    missing = point_agreement(_points(), _source(30, 8))  # no mask on this object
    assert missing["matched"] == 0 and missing["correct"] == 2   # only background agrees


def test_sources_are_ranked_best_first():
    rows = rank_sources(_points(), {"spill": _source(8, 14), "exact": _source(10, 10),
                                    "none": make_coco([_image()], [])})
    assert [r["source"] for r in rows] == ["exact", "spill", "none"]
    assert rows[0]["accuracy"] == 1.0 and rows[-1]["accuracy"] == 0.4


def test_no_best_source_from_too_few_points_or_a_tie():
    rows = rank_sources(_points(), {"spill": _source(8, 14), "exact": _source(10, 10)})
    best, why = choose_best(rows, min_points=200, min_images=5)
    assert best is None and "5 points on 1 image(s)" in why
    best, _ = choose_best(rows, min_points=5, min_images=1)
    assert best["source"] == "exact"
    tie = rank_sources(_points(), {"a": _source(10, 10), "b": _source(10, 10)})
    best, why = choose_best(tie, min_points=5, min_images=1)
    assert best is None and "ties with" in why
