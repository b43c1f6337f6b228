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
