"""A simulated annotation run in the real Label Studio UI, ground truth as the annotator."""
import secrets
from pathlib import Path

import numpy as np
import pytest

from bench.annotator import session
from bench.annotator.browser import CHROMIUM
from annotation.client import connect
from bench.annotator.oracle import match_boxes, plan_task, score_synced
from annotation.protocol import BACKGROUND, OBJECT
from annotation.tasks import make_task
from pipeline.data.coco import load_coco, mask_to_annotation


def disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_oracle_plans_deletes_flips_and_draws():
    h = w = 100
    truth = [disc(h, w, 30, 30, 12), disc(h, w, 70, 70, 12), disc(h, w, 30, 75, 8)]
    shifted = np.roll(truth[0], 8, axis=1)           # right box-ish, half its labels wrong
    fake = np.zeros((h, w), bool)
    fake[80:95, 5:20] = True                          # no object there
    pre = [mask_to_annotation(m, 1, 1) for m in (shifted, truth[1], fake)]
    result = make_task({"id": 1, "width": w, "height": h, "file_name": "x.png"}, pre, "", 10,
                       0, {1: "object"}, "v")["predictions"][0]["result"]
    plan = plan_task(result, truth, w, h, 10, np.random.default_rng(0))
    assert list(plan.delete) == ["b2"]                # the fake box
    assert len(plan.draw) == 1 and len(plan.draw[0].points) == 10  # the missed small disc
    assert plan.draw[0].box == (67.0, 22.0, 84.0, 39.0) and not plan.draw[0].assisted
    assert plan.kept_points == 20
    # the shifted box: its points labelled from the shifted mask, flipped where truth differs
    assert 0 < len(plan.relabel) < 10 and all(pid.startswith("b0p") for pid, *_ in plan.relabel)
    for pid, x, y, want in plan.relabel:
        assert want == (OBJECT if truth[0][int(y), int(x)] else BACKGROUND)
    assert plan.edits == 1 + len(plan.relabel) + 11


def test_matching_is_one_to_one_and_scores_points_of_unmatched_boxes_wrong():
    assert match_boxes([(0, 0, 10, 10), (0, 0, 10, 11)], [(0, 0, 10, 10)]) == {0: 0}
    truth = [disc(50, 50, 20, 20, 10)]
    synced = [{"bbox": [10, 10, 21, 21], "point_coords": [[20, 20], [0, 0]],
               "point_labels": [1, 1]},
              {"bbox": [30, 30, 10, 10], "point_coords": [[35, 35]], "point_labels": [0]}]
    s = score_synced(synced, truth)
    assert s == {"boxes": 2, "boxes_matched": 1, "objects": 1, "points": 3, "points_right": 1}


@pytest.mark.e2e
def test_scripted_annotation_run_makes_every_label_right(label_studio, tiny_sample, tmp_path):
    """Pre-annotations with every kind of error (a box shifted so its point labels are off,
    a box on nothing, an object without a box): the scripted browser flips, deletes, draws
    and places points in the real UI, and the synced result is the truth: every object has
    a box, every point label is right, no point of the deleted box came back."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    images = gt["images"][:2]
    pre_anns = []
    for im in images:
        h, w = im["height"], im["width"]
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        masks = session.truth_masks(anns, im)
        shifted = np.roll(masks[0], 6, axis=1)
        fake = np.zeros((h, w), bool)
        fake[h - 20:h - 4, 4:20] = True
        pre_anns += [mask_to_annotation(m, im["id"], 1) for m in [shifted, *masks[3:], fake]]
    # class-agnostic pre-annotations, as free masks and SOLO write them: the project's box
    # label is theirs, not the ground truth's five shape classes
    pre = dict(gt, images=images, annotations=pre_anns,
               categories=[{"id": 1, "name": "object", "supercategory": "object"}])
    client = connect(label_studio.url, label_studio.token)
    n = 4
    out = session.run(label_studio, client, f"session-{secrets.token_hex(3)}", pre,
                      dict(gt, images=images), tiny_sample / "sample" / "train", tiny_sample,
                      tmp_path, n_points=n, screenshots=tmp_path / "shots")
    rows = out["tasks"]
    assert len(rows) == 2 and not any(r["skipped"] for r in rows), rows
    assert all(r["deleted_boxes"] >= 1 and r["drawn_boxes"] >= 1 for r in rows), rows
    s = out["score"]
    assert s["boxes"] == s["boxes_matched"] == s["objects"], (s, rows)
    assert s["points_right"] == s["points"] > 0, (s, rows)
    assert out["reattached_points"] == 0
    assert out["sync"]["dropped_points"] == n * sum(r["deleted_boxes"] for r in rows)


def test_min_score_leaves_low_boxes_out_of_the_pre_annotation(sample_cfg, tiny_sample, tmp_path):
    from pipeline.data.datasets import get_split
    from pipeline.data.coco import save_coco
    from pipeline.stages.annotate import annotation_source
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    scored = [dict(a, score=s) for a, s in zip(gt["annotations"], [0.9, 0.2, 0.7, 0.69] * 99)]
    save_coco(tmp_path / "scored.json", dict(gt, annotations=scored))
    for low, want in ((0.0, len(scored)), (0.7, sum(a["score"] >= 0.7 for a in scored))):
        cfg = sample_cfg("stage=annotate", f"annotation.source={tmp_path / 'scored.json'}",
                         f"annotation.min_score={low}")
        _, _, coco = annotation_source(cfg, get_split(cfg.dataset, "train"))
        assert len(coco["annotations"]) == want
        assert all(a["score"] >= low for a in coco["annotations"])
    # ground truth has no score: every box stays
    cfg = sample_cfg("stage=annotate", "annotation.source=gt", "annotation.min_score=0.7")
    assert len(annotation_source(cfg, get_split(cfg.dataset, "train"))[2]["annotations"]) == \
        len(gt["annotations"])


def test_best_threshold_leaves_out_what_the_points_chose_to(sample_cfg, tiny_sample, tmp_path):
    """annotation.source=best with annotation.best_threshold: the winner's masks scored below
    the threshold its points chose (source_scores.json) are not pre-annotated; off: all are."""
    from pipeline.data.coco import save_coco
    from pipeline.data.datasets import get_split
    from pipeline.io import write_json
    from pipeline.stages.annotate import annotation_source
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    scored = [dict(a, score=s) for a, s in zip(gt["annotations"], [0.9, 0.2, 0.7, 0.69] * 99)]
    save_coco(tmp_path / "scored.json", dict(gt, annotations=scored))
    for on, want in (("false", len(scored)), ("true", sum(a["score"] >= 0.8 for a in scored))):
        cfg = sample_cfg("stage=annotate", "annotation.source=best", "annotation.min_score=0",
                         f"annotation.best_threshold={on}")
        write_json(Path(cfg.paths.work_dir) / "annotate_sync" / "source_scores.json",
                   [{"source": "scored", "file": str(tmp_path / "scored.json"), "best": True,
                     "threshold": 0.8}])
        version, _, coco = annotation_source(cfg, get_split(cfg.dataset, "train"))
        assert version == "scored" and len(coco["annotations"]) == want

def test_assisted_draw_counts_only_the_assistants_wrong_labels():
    h = w = 60
    truth = [disc(h, w, 30, 30, 10)]
    plan = plan_task([], truth, w, h, 10, np.random.default_rng(0), assisted=True)
    d = plan.draw[0]
    assert d.assisted and d.points == [] and plan.edits == 1     # the box, before it answers
    d.resolve([(30.5, 30.5, OBJECT), (2.5, 2.5, OBJECT), (30.5, 22.5, BACKGROUND),
               (50.5, 50.5, BACKGROUND)])
    assert d.flips == [(2.5, 2.5, BACKGROUND), (30.5, 22.5, OBJECT)]
    assert [p[2] for p in d.points] == [OBJECT, BACKGROUND, OBJECT, BACKGROUND]
    assert plan.edits == 1 + 2
