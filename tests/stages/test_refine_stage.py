"""stage=refine: a Mask R-CNN + Transfiner's refiner applied to any COCO file of masks."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from pipeline.__main__ import run_stage
from pipeline.data.coco import decode_segmentation, save_coco
from pipeline.data.datasets import get_split
from pipeline.errors import UserError
from pipeline.models.students import build_student

SMALL = ["backbone.weights=null", "overlays=0", "maskrcnn.refine=transfiner",
         "maskrcnn.transfiner.dim=32", "maskrcnn.transfiner.layers=1",
         "maskrcnn.transfiner.max_nodes=32"]


def _inputs(sample_cfg, tmp_path):
    """An (untrained) Mask R-CNN + Transfiner's weights and the test split's ground-truth
    masks as a scored COCO file."""
    cfg = sample_cfg("stage=refine", *SMALL)
    torch.manual_seed(0)
    torch.save(build_student(cfg, 1, "maskrcnn").model.state_dict(), tmp_path / "model.pt")
    split = get_split(cfg.dataset, "test")
    masks = dict(split.coco, annotations=[dict(a, score=1.0) for a in split.coco["annotations"]])
    save_coco(tmp_path / "masks.json", masks)
    return split, tmp_path / "masks.json", tmp_path / "model.pt"


@pytest.mark.e2e
def test_refine_stage_refines_each_mask_in_place(sample_cfg, tmp_path):
    split, masks, weights = _inputs(sample_cfg, tmp_path)
    cfg = sample_cfg("stage=refine", *SMALL, f"refine.masks={masks}", "refine.split=test",
                     f"refine.weights={weights}", run_name="refine")
    res = run_stage(cfg)
    out = Path(cfg.run_dir) / "refined_test.json"
    refined = COCO(str(out)).dataset
    gt = split.coco["annotations"]
    assert len(refined["annotations"]) == len(gt)  # one refined mask per input mask
    size = {im["id"]: (im["height"], im["width"]) for im in split.images}
    changed = 0
    for a, b in zip(sorted(gt, key=lambda a: a["image_id"]), refined["annotations"]):
        assert b["image_id"] == a["image_id"] and b["score"] == 1.0
        m0 = decode_segmentation(a["segmentation"], *size[a["image_id"]]).astype(bool)
        m1 = decode_segmentation(b["segmentation"], *size[b["image_id"]]).astype(bool)
        changed += int((m0 != m1).any())
        assert (m0 & m1).sum() / (m0 | m1).sum() > 0.5  # refined in place, not elsewhere
    assert changed > 0
    metrics = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert metrics["test_input"]["metrics"]["segm"]["AP"] == pytest.approx(100.0)
    assert res["test"]["metrics"]["segm"]["AP50"] > 90  # the masks stay on their objects
    assert "AP" in res["test"]["metrics"]["boundary"]


def test_refine_stage_refuses_masks_of_another_split_and_missing_weights(sample_cfg, tmp_path):
    split, masks, weights = _inputs(sample_cfg, tmp_path)
    cfg = sample_cfg("stage=refine", *SMALL, f"refine.masks={masks}", "refine.split=val",
                     f"refine.weights={weights}")
    with pytest.raises(UserError, match="refine.split"):
        run_stage(cfg)
    cfg = sample_cfg("stage=refine", *SMALL, f"refine.masks={masks}", "refine.split=test",
                     f"refine.weights={tmp_path / 'none.pt'}")
    with pytest.raises(UserError, match="refine.weights"):
        run_stage(cfg)
    assert np.all([not p.name.startswith("refined_") for p in tmp_path.rglob("*.json")])
