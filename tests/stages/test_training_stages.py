"""SOLO and Mask R-CNN stages end to end on the tiny sample with tiny schedules."""
import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from pipeline.__main__ import run_stage
from pipeline.errors import UserError
from tests.conftest import ROOT, cli_env, kill_9_when, pipeline_cmd

FREEMASK = ["backbone.weights=null", "freemask.short_side=320", "freemask.max_size=400",
            "freemask.shard_size=8", "overlays=0"]
SOLO = ["backbone.weights=null", "solo.train.max_iter=4", "solo.train.batch_size=2",
        "solo.train.ckpt_every=2", "solo.train.log_every=1", "solo.inference.shard_size=8",
        "overlays=1",
        "solo.self_training.score_threshold=0.0", "solo.inference.score_threshold=0.0",
        "solo.inference.update_threshold=0.0", "solo.inference.max_per_image=5"]
MASKRCNN = ["backbone.weights=null", "maskrcnn.train.max_iter=3", "maskrcnn.train.batch_size=2",
            "overlays=1"]
SPARSEINST = ["backbone.weights=null", "model=sparseinst", "sparseinst.train.max_iter=3",
              "sparseinst.train.batch_size=2", "sparseinst.inference.speed_images=2",
              "overlays=0"]
ADAMIXER = ["backbone.weights=null", "model=adamixer", "adamixer.train.max_iter=3",
            "adamixer.train.batch_size=2", "adamixer.inference.speed_images=2", "overlays=0"]


@pytest.mark.e2e
def test_solo_two_rounds_write_pseudo_labels(sample_cfg):
    run_stage(sample_cfg("stage=freemask", *FREEMASK, "freemask.freesolo.min_maskness=0.0",
                         run_name="freemask"))
    # round 2 trains half of round 1's iterations, with a weight average
    cfg = sample_cfg("stage=solo", *SOLO, "solo.self_training.iter_fraction=0.5",
                     "solo.train.ema=0.9", run_name="solo")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    assert set(res) == {f"round{r}/{s}" for r in (1, 2) for s in ("train", "val", "test")}
    api = COCO(str(run / "pseudo_labels.json"))
    assert len(api.getImgIds()) == 8
    for r in (1, 2):
        assert (run / f"round{r}" / "model.pt").is_file()
        assert (run / f"round{r}" / "metrics.json").is_file()
    for r, iterations in ((1, 4), (2, 2)):
        rows = (run / f"round{r}" / "metrics.csv").read_text().splitlines()
        assert rows[0].startswith("iteration,loss_cate") and len(rows) == 1 + iterations
    # a rerun finds every round trained and every shard predicted
    before = (run / "pseudo_labels.json").read_bytes()
    run_stage(cfg)
    assert (run / "pseudo_labels.json").read_bytes() == before


@pytest.mark.e2e
def test_solo_on_ground_truth_masks_is_one_supervised_round(sample_cfg):
    """solo=full_masks: the fully supervised ceiling of the SOLO rows, no free masks needed:
    one round on the training split's ground truth with SOLOv2's Dice loss alone."""
    cfg = sample_cfg("stage=solo", "solo=full_masks", *SOLO, run_name="solo_full_masks")
    assert cfg.solo.targets == cfg.dataset.splits.train.json and cfg.solo.rounds == 1
    assert cfg.solo.loss.dice == 3.0 and cfg.solo.loss.pairwise == 0 == cfg.solo.loss.proj_max
    res = run_stage(cfg)
    assert set(res) == {f"round1/{s}" for s in ("train", "val", "test")}
    rows = (Path(cfg.run_dir) / "round1" / "metrics.csv").read_text().splitlines()
    assert "loss_dice" in rows[0] and "loss_proj" not in rows[0] and "loss_pair" not in rows[0]


@pytest.mark.e2e
def test_solo_on_ground_truth_points_trains_with_the_point_loss(sample_cfg):
    """solo=points: the row beside solo=full_masks: one round on points simulated from the
    training split's masks, PointSup's point loss in place of the Dice loss."""
    cfg = sample_cfg("stage=solo", "solo=points", *SOLO, run_name="solo_points")
    assert cfg.solo.points == cfg.points_per_instance and cfg.solo.loss.points > 0
    assert cfg.solo.rounds == 1    # the CPU experiment's solo.loss.dice: off without masks
    res = run_stage(cfg)
    assert set(res) == {f"round1/{s}" for s in ("train", "val", "test")}
    rows = (Path(cfg.run_dir) / "round1" / "metrics.csv").read_text().splitlines()
    assert "loss_points" in rows[0] and "loss_dice" not in rows[0]


def test_solo_without_free_masks_is_a_clear_error(sample_cfg):
    with pytest.raises(UserError, match="stage=freemask.*free_masks_train.json"):
        run_stage(sample_cfg("stage=solo", *SOLO))


@pytest.mark.e2e
def test_solo_round_without_confident_masks_says_what_to_do(sample_cfg):
    run_stage(sample_cfg("stage=freemask", *FREEMASK, "freemask.freesolo.min_maskness=0.0",
                         run_name="freemask"))
    with pytest.raises(UserError, match="round 1 predicted no mask.*score_threshold"):
        run_stage(sample_cfg("stage=solo", *SOLO, "solo.self_training.score_threshold=1.0"))


@pytest.mark.e2e
@pytest.mark.parametrize("supervision", ["full", "points"])
def test_maskrcnn_trains_and_evaluates(sample_cfg, supervision):
    cfg = sample_cfg("stage=maskrcnn", f"supervision={supervision}", *MASKRCNN,
                     run_name=f"maskrcnn_{supervision}")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    assert "metrics" in res["val"] and "metrics" in res["test"] and (run / "model.pt").is_file()
    COCO(str(run / "predictions_val.json"))
    if supervision == "points":
        pts = json.loads((run / "points_train.json").read_text())["annotations"]
        assert all(len(a["point_coords"]) == 10 and "segmentation" not in a for a in pts)


@pytest.mark.e2e
def test_maskrcnn_scale_jitter_reaches_its_training_batches(sample_cfg):
    first_loss = {}
    for name, zoom in (("plain", "[1.0,1.0]"), ("zoom", "[0.5,1.5]")):
        cfg = sample_cfg("stage=maskrcnn", "supervision=points", "backbone.weights=null",
                         "maskrcnn.train.max_iter=1", "maskrcnn.train.batch_size=2",
                         "maskrcnn.train.log_every=1", f"maskrcnn.train.scale_jitter={zoom}",
                         "overlays=0", run_name=name)
        run_stage(cfg)
        rows = list(csv.DictReader(open(Path(cfg.run_dir) / "metrics.csv")))
        first_loss[name] = float(rows[0]["loss"])
    # same seed, same initial weights: only the zoomed images can move the first loss
    assert first_loss["plain"] != pytest.approx(first_loss["zoom"], rel=1e-4)


@pytest.mark.e2e
@pytest.mark.parametrize("supervision", ["full", "points"])
def test_sparseinst_trains_evaluates_and_times_itself(sample_cfg, supervision):
    cfg = sample_cfg("stage=student", f"supervision={supervision}", *SPARSEINST,
                     run_name=f"sparseinst_{supervision}")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    assert "metrics" in res["val"] and "metrics" in res["test"] and (run / "model.pt").is_file()
    preds = COCO(str(run / "predictions_test.json"))
    assert preds.getAnnIds()  # untrained queries still score above 0.005
    speed = json.loads((run / "metrics.json").read_text())["speed"]
    assert speed["images_per_s"] > 0 and speed["images"] == 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,loss_cls,loss_mask,loss_objectness")


@pytest.mark.e2e
def test_adamixer_trains_on_points_and_scores_its_boxes_and_masks(sample_cfg):
    cfg = sample_cfg("stage=student", "supervision=points", *ADAMIXER, run_name="adamixer")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    assert "metrics" in res["val"] and (run / "model.pt").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,loss_cls,loss_l1,loss_giou,loss_mask")
    preds = json.loads((run / "predictions_test.json").read_text())["annotations"]
    assert preds and all(len(a["bbox"]) == 4 and "segmentation" in a for a in preds)
    m = res["test"]["metrics"]
    assert {"bbox", "segm"} <= set(m)
    assert json.loads((run / "metrics.json").read_text())["speed"]["images"] == 2


def test_stage_maskrcnn_refuses_another_model(sample_cfg):
    with pytest.raises(UserError, match="stage=maskrcnn trains Mask R-CNN.*stage=student"):
        run_stage(sample_cfg("stage=maskrcnn", *SPARSEINST))


@pytest.mark.e2e
def test_solo_resumes_after_kill_9_to_the_same_pseudo_labels(tmp_path, tiny_sample, sample_cfg):
    """kill -9 mid-round, resume with loader workers: the weights and pseudo-labels of an
    uninterrupted run without workers."""
    fm = sample_cfg("stage=freemask", *FREEMASK, "freemask.freesolo.min_maskness=0.0",
                    run_name="freemask")
    run_stage(fm)
    targets = Path(fm.run_dir) / "free_masks_train.json"
    cmd = pipeline_cmd("stage=solo", f"paths.data_dir={tiny_sample}",
                       "dataset.generate.num.train=8", "dataset.generate.num.val=4", "dataset.generate.num.test=4",
                       f"solo.targets={targets}", *SOLO, "solo.rounds=1",
                       "solo.train.max_iter=12", "solo.train.ckpt_every=3", "progress=false",
                       "overlays=0")
    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd + [f"paths.output_dir={ref}"], check=True, env=cli_env(), cwd=ROOT,
                   capture_output=True)
    last = out / "cpu_sample" / "solo" / "round1" / "last.pt"

    def checkpoint_iteration() -> int:
        try:
            return torch.load(last, weights_only=False)["iteration"] if last.is_file() else 0
        except Exception:   # caught mid-replace: try again
            return 0
    # the killed and resumed run makes its batches in 2 loader worker processes, the reference
    # in the training thread: the same batches either way, and after the resume
    workers = ["hardware.loader_workers=2"]
    kill_9_when(cmd + workers + [f"paths.output_dir={out}"],
                lambda: checkpoint_iteration() >= 6)
    reached = checkpoint_iteration()
    assert 6 <= reached < 12, f"kill came at iteration {reached}"
    assert not (out / "cpu_sample" / "solo" / "round1" / "model.pt").exists()
    rerun = subprocess.run(cmd + workers + [f"paths.output_dir={out}"], check=True,
                           env=cli_env(), cwd=ROOT, capture_output=True, text=True)
    # it continued from the checkpoint instead of starting over
    assert re.search(r"resumed from .*last\.pt at iteration (6|9)", rerun.stdout + rerun.stderr)
    a = torch.load(ref / "cpu_sample" / "solo" / "round1" / "model.pt", weights_only=True)
    b = torch.load(out / "cpu_sample" / "solo" / "round1" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "cpu_sample" / "solo" / "pseudo_labels.json").read_bytes() == \
        (out / "cpu_sample" / "solo" / "pseudo_labels.json").read_bytes()


@pytest.mark.e2e
def test_solo_trains_on_freesolo_views(sample_cfg):
    """Copy-paste and strong views on: a round trains with finite losses and predicts."""
    run_stage(sample_cfg("stage=freemask", *FREEMASK, "freemask.freesolo.min_maskness=0.0",
                         run_name="freemask"))
    cfg = sample_cfg("stage=solo", *SOLO, "solo.rounds=1", "solo.train.copy_paste=1.0",
                     "solo.train.strong_view=true", run_name="solo_views")
    res = run_stage(cfg)
    assert "round1/val" in res
    rows = (Path(cfg.run_dir) / "round1" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and all("nan" not in r for r in rows)


@pytest.mark.e2e
def test_solo_embedding_loss_reads_the_free_masks_embeddings_from_beside_the_json(sample_cfg):
    """The free masks keep their embeddings in a .npz beside the JSON; SOLO's embedding loss
    gets them back (a loss_embed column with values, not a silently missing term)."""
    fm = sample_cfg("stage=freemask", *FREEMASK, "freemask.freesolo.min_maskness=0.0",
                    run_name="freemask")
    run_stage(fm)
    assert (Path(fm.run_dir) / "free_masks_train.embeddings.npz").is_file()
    cfg = sample_cfg("stage=solo", *SOLO, "solo.rounds=1", "solo.embedding.enabled=true",
                     "solo.train.max_iter=2", run_name="solo_embed")
    run_stage(cfg)
    rows = list(csv.DictReader(open(Path(cfg.run_dir) / "round1" / "metrics.csv")))
    assert rows and all(float(r["loss_embed"]) > 0 for r in rows)
