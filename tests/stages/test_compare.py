"""Comparison over a sweep: aggregation on a hand-made sweep dir, and a real tiny sweep."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.__main__ import run_stage
from pipeline.attempts import last_status
from tests.conftest import ROOT, cli_env


def fake_job(sweep: Path, name: str, supervision: dict, metrics=None, error=None,
             model=None, speed=None, refine=None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    c = {"supervision": supervision, **({"model": model} if model else {}),
         **({"maskrcnn": {"refine": refine}} if refine else {})}
    OmegaConf.save(OmegaConf.create(c), job / ".hydra" / "config.yaml")
    if metrics is not None:
        m = {"segm": {"AP": metrics[0], "AP50": metrics[1]}, "bbox": {"AP": metrics[2]}}
        data = {"test": {"metrics": m}, **({"speed": {"images_per_s": speed}} if speed else {})}
        (job / "metrics.json").write_text(json.dumps(data))
    if error:
        (job / "error.txt").write_text(error)


def test_aggregation_with_failed_and_killed_jobs(tmp_path, sample_cfg):
    sweep = tmp_path / "sweep"
    fake_job(sweep, "supervision=full", {"name": "full", "mask_loss": "full", "agnostic": True},
             (40.0, 60.0, 45.0))
    fake_job(sweep, "supervision=points", {"name": "points", "mask_loss": "points", "points": 10,
                                           "agnostic": True}, (38.0, 58.0, 44.0))
    fake_job(sweep, "supervision.points=3,supervision=points",
             {"name": "points", "mask_loss": "points", "points": 3}, (30.0, 50.0, 43.0))
    fake_job(sweep, "supervision=free_masks", {"name": "free_masks", "mask_loss": "full"},
             error="UserError: free-mask file not found: x.json")
    fake_job(sweep, "supervision=solo", {"name": "solo", "mask_loss": "full"})  # killed
    cfg = sample_cfg("stage=compare", f"compare.sweep_dir={sweep}")
    run_stage(cfg)
    out = Path(cfg.run_dir)
    rows = {r["run"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert len(rows) == 11                         # 5 jobs + 6 label-free rows
    assert rows["supervision=points"]["pct_of_full"].startswith("95")
    assert rows["supervision=free_masks"]["status"].startswith("failed: UserError: free-mask")
    assert rows["supervision=solo"]["status"].startswith("failed: no metrics.json")
    # cost model: 8 training images of the tiny sample; per instance 79.2 s vs 7 + 10 * 0.9 s
    n = len(json.loads(Path(cfg.dataset.splits.train.json).read_text())["annotations"])
    assert float(rows["supervision=full"]["annotation_hours"]) == pytest.approx(n * 79.2 / 3600)
    assert float(rows["supervision=points"]["annotation_hours"]) == pytest.approx(n * 16.0 / 3600)
    assert float(rows["supervision.points=3,supervision=points"]["annotation_s_per_image"]) == \
        pytest.approx(n * (7 + 2.7) / 8)
    md = (out / "comparison.md").read_text()
    assert "| Mask R-CNN, points (10 pts) | 38.0 |" in md and "failed" in md
    assert "| Mask R-CNN, points (3 pts) (class-aware model) | 30.0 |" in md
    assert (out / "ap_vs_cost.png").stat().st_size > 10_000


def _attempts(job: Path, *records, metrics_attempt=None):
    import socket
    (job / "attempts").mkdir()
    for n, (status, error) in enumerate(records, start=1):
        rec = {"attempt": n, "status": status, "pid": 999_999_999, "host": socket.gethostname()}
        if error:
            rec["error"] = error
        (job / "attempts" / f"{n:04d}.json").write_text(json.dumps(rec))
    if metrics_attempt:
        data = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps(dict(data, attempt=metrics_attempt)))


def test_a_job_is_reported_by_its_last_attempt(tmp_path, sample_cfg):
    """The table never shows an old AP as ok after the job's last attempt failed, was refused
    or was killed (issue 34: it read error.txt only when metrics.json was missing)."""
    import os
    sweep = tmp_path / "sweep"
    full = {"name": "full", "mask_loss": "full", "agnostic": True}
    # a folder from before attempts were recorded: error.txt newer than metrics.json
    fake_job(sweep, "old_failed", full, (40.0, 60.0, 45.0),
             error="UserError: points.json holds weights made from other inputs")
    os.utime(sweep / "old_failed" / "metrics.json", ns=(1, 1))
    fake_job(sweep, "refused", full, (41.0, 61.0, 46.0))
    _attempts(sweep / "refused", ("ok", None), ("refused", "UserError: model.pt holds weights "
                                                "made from other inputs"), metrics_attempt=1)
    fake_job(sweep, "killed", full, (42.0, 62.0, 47.0))
    _attempts(sweep / "killed", ("ok", None), ("running", None), metrics_attempt=1)
    fake_job(sweep, "rerun_ok", full, (43.0, 63.0, 48.0))
    _attempts(sweep / "rerun_ok", ("failed", "RuntimeError: boom"), ("ok", None),
              metrics_attempt=2)
    cfg = sample_cfg("stage=compare", f"compare.sweep_dir={sweep}")
    run_stage(cfg)
    out = Path(cfg.run_dir)
    rows = {r["run"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert rows["old_failed"]["status"].startswith("failed: UserError: points.json")
    assert rows["refused"]["status"].startswith("failed (attempt 2, refused: UserError: model.pt")
    assert rows["refused"]["status"].endswith("AP of attempt 1 not shown")
    assert rows["killed"]["status"] == "failed (attempt 2, killed (process gone)); AP of " \
                                       "attempt 1 not shown"
    assert all(rows[r]["mask_AP"] == "" for r in ("old_failed", "refused", "killed"))
    assert rows["rerun_ok"]["status"] == "ok" and rows["rerun_ok"]["attempt"] == "2"
    assert "| 43.0 | 63.0 | - | - | 48.0 |" in (out / "comparison.md").read_text()
    assert "ok (attempt 2)" in (out / "comparison.md").read_text()


def test_each_model_is_compared_with_its_own_full_masks_and_shows_its_speed(tmp_path,
                                                                          sample_cfg):
    sweep = tmp_path / "sweep"
    full = {"name": "full", "mask_loss": "full", "agnostic": True}
    points = {"name": "points", "mask_loss": "points", "points": 10, "agnostic": True}
    fake_job(sweep, "model=maskrcnn,supervision=full", full, (40.0, 60.0, 45.0),
             model="maskrcnn", speed=10.0)
    fake_job(sweep, "model=sparseinst,supervision=full", full, (20.0, 40.0, 15.0),
             model="sparseinst", speed=30.0)
    fake_job(sweep, "model=sparseinst,supervision=points", points, (18.0, 38.0, 14.0),
             model="sparseinst", speed=31.0)
    cfg = sample_cfg("stage=compare", f"compare.sweep_dir={sweep}")
    run_stage(cfg)
    out = Path(cfg.run_dir)
    rows = {r["run"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert float(rows["model=sparseinst,supervision=points"]["pct_of_full"]) == \
        pytest.approx(90.0)                       # 18 / 20, not 18 / 40
    assert rows["model=sparseinst,supervision=full"]["method"] == "SparseInst, full masks"
    assert float(rows["model=sparseinst,supervision=full"]["images_per_s"]) == 30.0
    md = (out / "comparison.md").read_text()
    assert "| SparseInst, points (10 pts) | 18.0 | 38.0 | - | - | 14.0 | 90% |" in md
    assert "| Mask R-CNN, full masks | 40.0 | 60.0 | - | - | 45.0 | 100% |" in md and "| 10.0 |" in md


def test_transfiner_rows_are_named_and_compared_with_their_own_full_masks(tmp_path,
                                                                         sample_cfg):
    sweep = tmp_path / "sweep"
    full = {"name": "full", "mask_loss": "full", "agnostic": True}
    points = {"name": "points", "mask_loss": "points", "points": 10, "agnostic": True}
    fake_job(sweep, "supervision=full", full, (40.0, 60.0, 45.0), refine="none")
    fake_job(sweep, "maskrcnn.refine=transfiner,supervision=full", full, (50.0, 70.0, 45.0),
             refine="transfiner")
    fake_job(sweep, "maskrcnn.refine=transfiner,supervision=points", points, (45.0, 65.0, 44.0),
             refine="transfiner")
    cfg = sample_cfg("stage=compare", f"compare.sweep_dir={sweep}")
    run_stage(cfg)
    rows = list(csv.DictReader(open(Path(cfg.run_dir) / "comparison.csv")))
    by_run = {r["run"]: r for r in rows}
    assert by_run["maskrcnn.refine=transfiner,supervision=points"]["method"] == \
        "Mask R-CNN + Transfiner, points (10 pts)"
    assert float(by_run["maskrcnn.refine=transfiner,supervision=points"]["pct_of_full"]) == \
        pytest.approx(90.0)                       # 45 / 50 (Transfiner's), not 45 / 40
    assert float(by_run["supervision=full"]["pct_of_full"]) == pytest.approx(100.0)
    assert [r["method"] for r in rows][:3] == ["Mask R-CNN, full masks",
                                               "Mask R-CNN + Transfiner, full masks",
                                               "Mask R-CNN + Transfiner, points (10 pts)"]


def test_measured_lead_time_replaces_cost_model(tmp_path, sample_cfg):
    ann = tmp_path / "ls_points.json"
    ann.write_text(json.dumps({"images": [], "annotations": [{"lead_time": 12.0},
                                                           {"lead_time": 8.0}]}))
    sweep = tmp_path / "sweep"
    fake_job(sweep, "a", {"name": "points", "mask_loss": "points", "points": 10,
                          "annotations": str(ann)}, (1.0, 2.0, 3.0))
    cfg = sample_cfg("stage=compare", f"compare.sweep_dir={sweep}")
    rows = run_stage(cfg)["rows"]
    n = len(json.loads(Path(cfg.dataset.splits.train.json).read_text())["annotations"])
    assert rows[0]["annotation_hours"] == pytest.approx(n * 10.0 / 3600)


def sweep_cmd(tiny_sample, out, *extra):
    return [sys.executable, "-m", "pipeline", "-m", "stage=maskrcnn",
            f"paths.data_dir={tiny_sample}", f"paths.output_dir={out}",
            "dataset.generate.num.train=8", "dataset.generate.num.val=4",
            "dataset.generate.num.test=4",
            "backbone.weights=null", "maskrcnn.train.max_iter=2", "maskrcnn.train.batch_size=2",
            "overlays=0", "progress=false", *extra]


@pytest.mark.e2e
def test_real_sweep_reports_failed_job_and_reuses_finished_work(tmp_path, tiny_sample):
    env = cli_env()
    out = tmp_path / "out"
    cmd = sweep_cmd(tiny_sample, out, "supervision=full,points,free_masks")
    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode != 0          # free_masks has no free-mask file: that job fails
    sweep = out / "cpu_sample" / "multirun"

    def job(name):  # job folders are named by the overrides, ending with the supervision
        return next(sweep.glob(f"*{name}"))
    assert (job("supervision=full") / "metrics.json").is_file()
    assert (job("supervision=points") / "metrics.json").is_file()
    # refused before its guard passed: recorded as an attempt, nothing else in its folder
    refused = last_status(job("supervision=free_masks"))
    assert refused["status"] == "refused" and "free_masks_train.json" in refused["error"]
    assert not (job("supervision=free_masks") / "error.txt").exists()
    assert not (job("supervision=free_masks") / "config.yaml").exists()
    model = job("supervision=full") / "model.pt"
    stamp = model.stat().st_mtime_ns
    # as `make compare` runs it: jobs in parallel, one thread each; the job folder (named
    # without the launcher's and the threads' overrides) is the one made above
    again = subprocess.run(sweep_cmd(tiny_sample, out, "supervision=full,points",
                                     "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                     "hardware.threads=1"),
                           env=env, cwd=ROOT, capture_output=True, text=True)
    log = again.stdout + again.stderr
    assert again.returncode == 0 and "already trained" in log, log[-2000:]
    assert log.count("already trained") == 2, log[-2000:]
    assert "resuming: 1 of 1 shards already done" in log  # same inputs: nothing recomputed
    assert model.stat().st_mtime_ns == stamp
    res = subprocess.run([sys.executable, "-m", "pipeline", "stage=compare",
                          f"paths.data_dir={tiny_sample}", f"paths.output_dir={out}",
                          "dataset.generate.num.train=8", "dataset.generate.num.val=4",
                          "dataset.generate.num.test=4"],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = {r["supervision"]: r for r in csv.DictReader(
        open(out / "cpu_sample" / "compare" / "comparison.csv"))}
    assert rows["full"]["status"] == "ok" and rows["points"]["status"] == "ok"
    assert rows["free_masks"]["status"].startswith("failed (attempt 1, refused: ")
    assert rows["full"]["attempt"] == "2"  # the rerun's metrics


@pytest.mark.e2e
def test_submitit_local_launcher_runs_a_job(tmp_path, tiny_sample):
    env = cli_env()
    out = tmp_path / "out"
    res = subprocess.run(sweep_cmd(tiny_sample, out, "supervision=full",
                                   "hydra/launcher=local_processes"),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert next((out / "cpu_sample" / "multirun").glob("*supervision=full/metrics.json"))


def test_seeds_of_one_run_become_one_row_with_mean_and_spread():
    from pipeline.stages.compare import _without_seed, aggregate
    assert _without_seed("seed=1,supervision.agnostic=true,supervision=full") == \
        "supervision.agnostic=true,supervision=full"
    assert _without_seed("a=1,seed=12") == "a=1" and _without_seed("seed=0") == "."

    def row(ap, run="supervision=full", status="ok"):
        return {"method": "Mask R-CNN, full masks", "supervision": "full", "run": run,
                "status": status, "mask_AP": ap, "mask_AP50": ap and 2 * ap,
                "box_AP": ap and ap + 1}
    rows = aggregate([row(10.0), row(12.0), row(14.0), row(30.0, run="other")])
    main = next(r for r in rows if r["run"] == "supervision=full")
    assert main["mask_AP"] == 12.0 and main["mask_AP_sd"] == 2.0 and main["seeds"] == 3
    assert main["mask_AP50"] == 24.0 and main["status"] == "ok"
    single = next(r for r in rows if r["run"] == "other")
    assert single["mask_AP_sd"] is None and single["seeds"] == 1
    failed = aggregate([row(10.0), row(None, status="failed: boom")])[0]
    assert failed["mask_AP"] == 10.0 and failed["status"].startswith("1 of 2 failed: failed")


def test_boundary_ap_and_ap75_columns_are_averaged_and_shown():
    from pipeline.stages.compare import _boundary_cols, aggregate, to_markdown
    m = {"segm": {"AP": 10.0, "AP50": 20.0, "AP75": 8.0}, "bbox": {"AP": 11.0},
         "boundary": {"AP": 6.0}}
    assert _boundary_cols(m) == {"mask_AP75": 8.0, "boundary_AP": 6.0}
    assert _boundary_cols({"segm": {"AP": 1.0}})["boundary_AP"] is None  # older metrics.json
    rows = [{"method": "Mask R-CNN, full masks", "supervision": "full", "run": "r",
             "status": "ok", "mask_AP": 10.0, "mask_AP50": 20.0, "box_AP": 11.0,
             "mask_AP75": a75, "boundary_AP": apb} for a75, apb in ((8.0, 6.0), (10.0, 9.0))]
    row = aggregate(rows)[0]
    assert row["mask_AP75"] == 9.0 and row["boundary_AP"] == 7.5
    table = to_markdown([row], "t")
    assert "| mask AP75 | AP^B |" in table and "| 9.0 | 7.5 |" in table
