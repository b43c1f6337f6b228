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
