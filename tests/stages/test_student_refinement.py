"""The students' optional edge refinement (Mask R-CNN, SparseInst): their masks, pasted from a
28 x 28 grid or a stride-4 map, snap to the image's edges as the free masks' do."""
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pipeline.models.students import StudentPredictor
from tests.stages.test_solo_refinement import _disc_case, _iou


def _annotations(radius: int, image, probs) -> list[dict]:
    """StudentPredictor's post-processing alone: (K, 1, h, w) probabilities at the image's
    size, each scored 0.9 with label 1 (category 7) -> their annotations."""
    pred = StudentPredictor.__new__(StudentPredictor)
    pred.node = OmegaConf.create({"inference": {"mask_threshold": 0.5,
                                                "guided_radius_px": radius}})
    pred.label_to_cat = {1: 7}
    k = len(probs)
    anns = pred.annotations({"id": 1}, image, image.shape[:2],
                            (probs, torch.full((k,), 0.9), torch.ones(k, dtype=torch.long), None))
    assert all(a["category_id"] == 7 for a in anns)
    return anns


def _upsampled(image, coarse):
    return F.interpolate(coarse[None], size=image.shape[:2], mode="bilinear",
                         align_corners=False)


def test_guided_refinement_moves_student_masks_onto_the_object_edges():
    image, disc, coarse = _disc_case()
    prob = _upsampled(image, coarse)
    plain, = _annotations(0, image, prob)
    refined, = _annotations(4, image, prob)
    plain, refined = _iou(plain, disc), _iou(refined, disc)
    assert plain < 0.97 and refined > plain + 0.01, (plain, refined)


def test_refinement_in_chunks_matches_mask_by_mask():
    """More masks than one chunk (16): each comes out as it does alone."""
    image, _, coarse = _disc_case()
    prob = _upsampled(image, coarse)
    probs = torch.cat([prob * (0.6 + 0.02 * k) for k in range(20)])     # 20 different masks
    many = _annotations(4, image, probs)
    alone = [_annotations(4, image, p[None])[0] for p in probs]
    assert len(many) == 20
    assert [a["segmentation"] for a in many] == [a["segmentation"] for a in alone]
    assert len({a["segmentation"]["counts"] for a in many}) > 1   # the masks do differ
