"""The students' optional edge refinement (Mask R-CNN, SparseInst): their masks, pasted from a
28 x 28 grid or a stride-4 map, snap to the image's edges as the free masks' do."""
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pipeline.models.students import StudentPredictor
from tests.stages.test_solo_refinement import _disc_case, _iou


def _student_masks(radius: int, image, coarse):
    pred = StudentPredictor.__new__(StudentPredictor)
    pred.node = OmegaConf.create({"inference": {"mask_threshold": 0.5,
                                                "guided_radius_px": radius}})
    pred.label_to_cat = {1: 7}
    h, w = image.shape[:2]
    prob = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)
    anns = pred.annotations({"id": 1}, image, (h, w),
                            (prob, torch.tensor([0.9]), torch.tensor([1]), None))
    assert len(anns) == 1 and anns[0]["category_id"] == 7
    return anns[0]


def test_guided_refinement_moves_student_masks_onto_the_object_edges():
    image, disc, coarse = _disc_case()
    plain = _iou(_student_masks(0, image, coarse), disc)
    refined = _iou(_student_masks(4, image, coarse), disc)
    assert plain < 0.97 and refined > plain + 0.01, (plain, refined)


def test_refinement_in_chunks_matches_mask_by_mask():
    """More masks than one chunk (16): each comes out as it does alone."""
    image, _, coarse = _disc_case()
    pred = StudentPredictor.__new__(StudentPredictor)
    pred.node = OmegaConf.create({"inference": {"mask_threshold": 0.5, "guided_radius_px": 4}})
    pred.label_to_cat = {1: 1}
    h, w = image.shape[:2]
    prob = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)
    probs = torch.cat([prob * (0.6 + 0.02 * k) for k in range(20)])     # 20 different masks
    many = pred.annotations({"id": 1}, image, (h, w),
                            (probs, torch.full((20,), 0.9), torch.ones(20, dtype=torch.long),
                             None))
    alone = [pred.annotations({"id": 1}, image, (h, w),
                              (p[None], torch.tensor([0.9]), torch.tensor([1]), None))[0]
             for p in probs]
    assert len(many) == 20
    assert [a["segmentation"] for a in many] == [a["segmentation"] for a in alone]
    assert len({a["segmentation"]["counts"] for a in many}) > 1   # the masks do differ
