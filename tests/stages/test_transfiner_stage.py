"""Mask R-CNN + Mask Transfiner (maskrcnn.refine=transfiner) trained and evaluated end to end
on the tiny sample with a tiny schedule, under full masks and points."""
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from pipeline.__main__ import run_stage

TRANSFINER = ["backbone.weights=null", "maskrcnn.train.max_iter=2",
              "maskrcnn.train.batch_size=2", "overlays=0", "maskrcnn.refine=transfiner",
              "maskrcnn.transfiner.dim=32", "maskrcnn.transfiner.layers=1",
              "maskrcnn.transfiner.max_nodes=32", "maskrcnn.transfiner.train_rois=8",
              "maskrcnn.eval_splits=[test]"]


@pytest.mark.e2e
@pytest.mark.parametrize("supervision", ["full", "points"])
def test_maskrcnn_with_transfiner_trains_and_reports_boundary_ap(sample_cfg, supervision):
    cfg = sample_cfg("stage=maskrcnn", f"supervision={supervision}", *TRANSFINER,
                     run_name=f"transfiner_{supervision}")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    m = res["test"]["metrics"]
    assert set(m) >= {"segm", "bbox", "boundary"} and "AP" in m["boundary"]
    state = torch.load(run / "model.pt", weights_only=True)
    assert any(k.startswith("refiner.sequence.") for k in state)
    assert any(k.startswith("maskrcnn.roi_heads.") for k in state)
    assert "loss_refine" in (run / "metrics.csv").read_text()  # L_refine was trained
    COCO(str(run / "predictions_test.json"))


@pytest.mark.e2e
def test_refiner_inference_settings_repredict_without_retraining(sample_cfg):
    """The refiner's prediction-only settings (threshold, select, min_score) are outside the
    weights' fingerprint, so changing one re-uses model.pt, and inside the predictions' key,
    so the predictions are made again, not taken from the shards of the other value."""
    args = ["stage=maskrcnn", "supervision=full", *TRANSFINER]
    cfg = sample_cfg(*args, "maskrcnn.transfiner.select=expected",
                     run_name="transfiner_repredict")
    run_stage(cfg)
    run = Path(cfg.run_dir)
    weights = (run / "model.pt").stat().st_mtime_ns
    shards = {p.name: p.read_bytes() for p in (run / "shards").rglob("*") if p.is_file()}
    cfg = sample_cfg(*args, "maskrcnn.transfiner.select=threshold",
                     "maskrcnn.transfiner.threshold=0.05", run_name="transfiner_repredict")
    run_stage(cfg)
    assert (run / "model.pt").stat().st_mtime_ns == weights             # not retrained
    again = {p.name: p.read_bytes() for p in (run / "shards").rglob("*") if p.is_file()}
    assert again != shards                                                # predicted again
