"""SOLO's optional edge refinement: the coarse stride-4 masks snap to the image's edges."""
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pycocotools import mask as mask_utils

from pipeline.data.coco import pycocotools_rle
from pipeline.models.solo_predictor import SoloPredictor
from pipeline.ops.components import largest_component


def _disc_case():
    h = w = 96
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 45.3) ** 2 + (xx - 50.7) ** 2 <= 21.5 ** 2
    image = np.where(disc[..., None], 220, 30).astype(np.uint8).repeat(3, 2)
    # what SOLO's mask branch gives: the disc seen at stride 4, blurred (24 x 24 cells)
    coarse = F.avg_pool2d(torch.from_numpy(disc).float()[None, None], 4)
    coarse = F.avg_pool2d(coarse, 3, stride=1, padding=1, count_include_pad=False)[0]
    return image, disc, coarse


def _postprocess(inference: dict, image, coarse) -> dict:
    """SoloPredictor's post-processing alone: one soft mask (score 0.9) -> its annotation."""
    pred = SoloPredictor.__new__(SoloPredictor)
    pred.cfg = OmegaConf.create({"inference": inference})
    pred.params = type("P", (), {"mask_threshold": 0.5})()
    h, w = image.shape[:2]
    return pred.annotations({"id": 1}, image, (h, w),
                            (coarse, torch.tensor([0.9]), torch.tensor([0])))[0]


def _iou(ann, disc) -> float:
    m = mask_utils.decode(pycocotools_rle(ann["segmentation"])).astype(bool)
    return (m & disc).sum() / (m | disc).sum()


def test_guided_refinement_moves_solo_masks_onto_the_object_edges():
    image, disc, coarse = _disc_case()

    def predict(radius):
        return _postprocess({"guided_radius": radius, "guided_eps": 1e-2}, image, coarse)

    plain, refined = _iou(predict(0.0), disc), _iou(predict(1.0), disc)
    assert plain < 0.97 and refined > plain + 0.01, (plain, refined)


def test_largest_component_drops_the_pieces_of_a_mask_on_other_objects():
    """A soft mask covering a large and a small blob (SOLO's mask for one cell spilling onto
    a neighbouring object): with largest_component only the large blob is kept, and its box
    shrinks to it; without, both stay."""
    coarse = torch.zeros(1, 24, 24)
    coarse[0, 2:12, 2:12] = 1.0     # 40 x 40 px at stride 4
    coarse[0, 16:20, 16:20] = 1.0   # 16 x 16 px
    image = np.full((96, 96, 3), 128, np.uint8)

    def predict(one_piece):
        ann = _postprocess({"largest_component": one_piece}, image, coarse)
        return mask_utils.decode(pycocotools_rle(ann["segmentation"])).astype(bool), ann["bbox"]

    both, _ = predict(False)
    one, box = predict(True)
    assert both[10:46, 10:46].all() and both[66:78, 66:78].all()
    assert one[10:46, 10:46].all() and not one[56:, 56:].any()
    assert (one == largest_component(both)).all()
    assert box[0] + box[2] < 56 and box[1] + box[3] < 56
    assert not largest_component(np.zeros((5, 5), bool)).any()
