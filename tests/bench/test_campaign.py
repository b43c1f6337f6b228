"""The simulated annotation campaign's bookkeeping (bench/campaign.py): queues, cumulative cost,
rounds, what an annotated task syncs to and what `ours` fine-tunes on. No training here."""
from types import SimpleNamespace

import numpy as np
import pytest

from annotation.protocol import results_to_instances
from annotation.tasks import make_task
from bench import campaign
from bench.annotator.oracle import carried_out, plan_task, score_synced
from pipeline.data.coco import mask_to_annotation

COST = SimpleNamespace(polygon_mask_s=79.2, box_s=7.0, point_s=0.9)


def disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_queues_least_certain_first_and_seeded_random():
    assert campaign.uncertainty_order({5: 0.9, 2: 0.1, 7: 0.1, 3: 0.0}) == [3, 2, 7, 5]
    ids = list(range(1, 97))
    a, b = campaign.random_order(ids, 0), campaign.random_order(reversed(ids), 0)
    assert a == b and sorted(a) == ids and a != ids
    assert campaign.random_order(ids, 1) != a


def test_rounds_add_new_images_and_cumulative_hours():
    ledger = campaign.Ledger()
    seconds = {i: 10.0 * i for i in range(1, 9)}
    first = ledger.add(ledger.next_images([3, 1, 2, 4, 5, 6, 7, 8], 2), seconds)
    assert first["new"] == [3, 1] and first["round_seconds"] == 40.0
    second = ledger.add(ledger.next_images([1, 8, 3, 2, 4], 4), seconds)  # 1, 3 done already
    assert second["new"] == [8, 2] and second["images"] == 4 and second["round"] == 2
    assert second["seconds"] == pytest.approx(140.0)
    assert second["hours"] == pytest.approx(140.0 / 3600)
    with pytest.raises(ValueError):
        ledger.add([8], seconds)                        # an image is annotated once
    with pytest.raises(ValueError):
        ledger.next_images([1, 2, 3, 8, 5], 6)          # not enough images left in the queue
    assert campaign.round_sizes("8,16,32,48", 96) == [8, 16, 32, 48]
    for bad in ("16,8", "0,8", "8,97", ""):
        with pytest.raises(SystemExit):
            campaign.round_sizes(bad, 96)


def test_goal_is_95_percent_of_full_ap_within_10_percent_of_its_hours():
    rows = [{"round": 0, "hours": 0.0, "mask_AP": 20.0},
            {"round": 1, "hours": 0.5, "mask_AP": 23.0},
            {"round": 2, "hours": 0.95, "mask_AP": 24.0}]
    assert campaign.goal_reached(rows, 24.1, 9.09)["round"] == 1
    assert campaign.goal_reached(rows, 24.1, 4.0) is None      # 10% of 4 h is 0.4 h
    assert campaign.goal_reached(rows[:1], 24.1, 9.09) is None


def test_an_annotated_task_costs_its_edits_and_syncs_to_the_truth():
    h = w = 100
    truth = [disc(h, w, 30, 30, 12), disc(h, w, 70, 70, 12), disc(h, w, 30, 75, 8)]
    fake = np.zeros((h, w), bool)
    fake[80:95, 5:20] = True                            # a box on no object: deleted
    shifted = np.roll(truth[0], 3, axis=1)              # kept, some labels wrong: flipped
    pre = [mask_to_annotation(m, 1, 1) for m in (shifted, truth[1], fake)]
    result = make_task({"id": 1, "width": w, "height": h, "file_name": "x.png"}, pre, "", 10,
                       0, {1: "object"}, "v")["predictions"][0]["result"]
    plan = plan_task(result, truth, w, h, 10, np.random.default_rng(0))
    assert len(plan.delete) == 1 and len(plan.draw) == 1    # the third object is drawn
    assert plan.seconds(COST) == pytest.approx(7.0 + 0.9 * (1 + len(plan.relabel) + 10))
    synced, _ = results_to_instances(carried_out(result, plan, w, h), w, h, {"object": 1}, 10)
    score = score_synced(synced, truth)
    assert score["boxes"] == score["boxes_matched"] == score["objects"] == 3
    assert score["points"] == 30 and score["points_right"] == 30


def test_ours_trains_on_synced_points_and_pseudo_label_points_of_the_rest():
    h = w = 40
    infos = [{"id": i, "width": w, "height": h, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    pseudo = {"images": infos, "categories": [{"id": 1, "name": "object"}],
              "annotations": [mask_to_annotation(disc(h, w, 20, 20, 8), i, 1, id=i, score=0.9)
                              for i in (1, 2, 3)]}
    synced = [{"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 1, "area": 100,
               "iscrowd": 0, "point_coords": [[5, 5]], "point_labels": [1]}]
    data = campaign.mixed_points(synced, pseudo, {1}, infos, n_points=10, seed=0)
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    assert by_image[1] == [dict(synced[0], id=1)]       # the annotator's, not the pseudo-label
    for i in (2, 3):
        (a,) = by_image[i]
        assert len(a["point_coords"]) == 10 and "segmentation" not in a
        assert 0 < sum(a["point_labels"]) < 10          # labelled by the pseudo-mask
    assert len({a["id"] for a in data["annotations"]}) == 3
