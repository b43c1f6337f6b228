"""SOLO's optional edge refinement: the coarse stride-4 masks snap to the image's edges."""
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pycocotools import mask as mask_utils

from pipeline.data.coco import pycocotools_rle
from pipeline.models.solo_predictor import SoloPredictor


def _disc_case():
    h = w = 96
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 45.3) ** 2 + (xx - 50.7) ** 2 <= 21.5 ** 2
    image = np.where(disc[..., None], 220, 30).astype(np.uint8).repeat(3, 2)
    # what SOLO's mask branch gives: the disc seen at stride 4, blurred (24 x 24 cells)
    coarse = F.avg_pool2d(torch.from_numpy(disc).float()[None, None], 4)
    coarse = F.avg_pool2d(coarse, 3, stride=1, padding=1, count_include_pad=False)[0]
    return image, disc, coarse


def _iou(ann, disc) -> float:
    m = mask_utils.decode(pycocotools_rle(ann["segmentation"])).astype(bool)
    return (m & disc).sum() / (m | disc).sum()


def test_guided_refinement_moves_solo_masks_onto_the_object_edges():
    image, disc, coarse = _disc_case()
    info = {"id": 1}
    score, label = torch.tensor([0.9]), torch.tensor([0])

    def predict(radius):
        cfg = OmegaConf.create({"inference": {"guided_radius": radius, "guided_eps": 1e-2}})
        pred = SoloPredictor.__new__(SoloPredictor)  # only the post-processing is exercised
        pred.cfg = cfg
        pred.params = type("P", (), {"mask_threshold": 0.5})()
        return pred.annotations(info, image, (96, 96), (coarse, score, label))[0]

    plain, refined = _iou(predict(0.0), disc), _iou(predict(1.0), disc)
    assert plain < 0.97 and refined > plain + 0.01, (plain, refined)
