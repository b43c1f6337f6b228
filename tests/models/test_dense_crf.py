"""MaskCut's dense-CRF post-processing: an optional extra the project runs without."""
import sys

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.models.dense_crf import CRFParams, crf_refine, require_crf


def test_without_pydensecrf_crf_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)           # import fails
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(UserError) as e:
        require_crf()
    msg = str(e.value)
    assert "\n" not in msg and "freemask.maskcut.crf" in msg and "pydensecrf2" in msg


def test_free_masks_without_crf_never_import_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    import torch

    from pipeline.models.backbone import ResNetFeatures
    from pipeline.models.free_mask_predictor import FreeMaskPredictor
    from tests.conftest import make_cfg
    cfg = make_cfg(tmp_path, "freemask.method=maskcut")
    assert cfg.freemask.maskcut.crf is False
    FreeMaskPredictor(ResNetFeatures("resnet18"), cfg.freemask, torch.device("cpu"))
    cfg = make_cfg(tmp_path, "freemask.method=maskcut", "freemask.maskcut.crf=true")
    with pytest.raises(UserError):
        FreeMaskPredictor(ResNetFeatures("resnet18"), cfg.freemask, torch.device("cpu"))


def scene():
    img = np.full((48, 48, 3), 30, np.uint8)
    img[12:36, 14:34] = (220, 200, 40)
    obj = np.zeros((48, 48), bool)
    obj[12:36, 14:34] = True
    return img, obj


def test_crf_snaps_a_coarse_mask_to_the_object_and_drops_a_moved_one():
    pytest.importorskip("pydensecrf.densecrf")
    img, obj = scene()
    img.setflags(write=False)                   # images arrive read-only from the loader
    coarse = np.zeros_like(obj)
    coarse[10:32, 12:36] = True                 # off by a few pixels, as a cut at stride 16
    stray = np.zeros_like(obj)
    stray[0:6, 0:48] = True                     # a strip of background
    refined, keep = crf_refine(img, np.stack([coarse, stray]), CRFParams())

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()
    assert iou(refined[0], obj) > iou(coarse, obj) and iou(refined[0], obj) > 0.9
    assert keep[0]
    assert refined.dtype == bool and refined.shape == (2, 48, 48)
