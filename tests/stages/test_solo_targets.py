"""solo.targets_min_quantile: round 1's threshold from the free masks' own scores."""
import pytest

from pipeline.errors import UserError
from pipeline.stages.solo import confident_targets


def _masks(scores):
    return {"images": [{"id": 1, "height": 8, "width": 8}], "categories": [],
            "annotations": [{"id": i, "image_id": 1, "score": s} for i, s in enumerate(scores)]}


def test_the_threshold_follows_the_score_distribution():
    low = _masks([0.1, 0.2, 0.3, 0.4, 0.5])        # nothing reaches 0.9 here
    with pytest.raises(UserError, match="targets_min_score=0.9"):
        confident_targets(low, 0.9, "f.json")
    kept = confident_targets(low, 0.9, "f.json", quantile=0.6)   # quantile wins: 0.34
    assert [a["score"] for a in kept["annotations"]] == [0.4, 0.5]
    high = _masks([0.6, 0.92, 0.95, 0.97, 0.99])
    kept = confident_targets(high, 0.0, "f.json", quantile=0.6)  # 0.958: the same share
    assert [a["score"] for a in kept["annotations"]] == [0.97, 0.99]
    assert len(confident_targets(high, 0.0, "f.json")["annotations"]) == 5
    with pytest.raises(UserError, match="targets_min_quantile"):
        confident_targets(high, 0.0, "f.json", quantile=1.0)


def test_solo_points_simulates_points_unless_the_targets_carry_them():
    """solo=points: N points per instance from the targets' masks (seeded), masks dropped;
    a points file is used as it is; without the point loss nothing changes."""
    import numpy as np
    from omegaconf import OmegaConf
    from pipeline.data.coco import encode_mask
    from pipeline.stages.solo import point_targets
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 1
    gt = {"images": [{"id": 1, "height": 8, "width": 8}], "categories": [],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 4],
                           "area": 16, "iscrowd": 0, "segmentation": encode_mask(m)}]}
    s = OmegaConf.create({"targets": "gt.json", "points": 5, "point_seed": 3,
                          "loss": {"points": 3.0}})
    out = point_targets(gt, s)
    a = out["annotations"][0]
    assert len(a["point_coords"]) == 5 and "segmentation" not in a
    assert all(lab == m[y, x] for (x, y), lab in zip(a["point_coords"], a["point_labels"]))
    assert point_targets(gt, s) == out                               # seeded
    assert point_targets(out, OmegaConf.merge(s, {"points": 9})) is out  # carries points
    assert point_targets(gt, OmegaConf.merge(s, {"loss": {"points": 0.0}})) is gt
    with pytest.raises(UserError, match="solo.points"):
        point_targets(gt, OmegaConf.merge(s, {"points": 0}))
