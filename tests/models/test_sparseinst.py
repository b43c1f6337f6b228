"""SparseInst: matching, IAM normalisation, point sampling coordinates, objectness target."""
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import sparseinst as si
from pipeline.models.backbone import ResNetFeatures


def test_matching_takes_the_best_assignment_not_the_greedy_one():
    # greedy takes query 0 for object 0 (0.9), leaving 0.1 for object 1; the optimum swaps
    score = torch.tensor([[0.9, 0.8], [0.85, 0.1], [0.05, 0.05]])
    q, t = si.hungarian_match(torch.ones(3, 2), score, alpha=0.8)
    assert sorted(zip(q.tolist(), t.tolist())) == [(0, 1), (1, 0)]


def test_matching_weighs_class_probability_by_one_minus_alpha():
    # the same masks for both queries: the class probability decides
    mask = torch.tensor([[0.5], [0.5]])
    cls = torch.tensor([[0.2], [0.9]])
    q, _ = si.hungarian_match(cls, mask, alpha=0.8)
    assert q.tolist() == [1]
    # alpha = 1: classes are ignored, the first of equal scores is taken
    q, _ = si.hungarian_match(torch.tensor([[0.2], [0.9]]), torch.tensor([[0.6], [0.5]]), 1.0)
    assert q.tolist() == [0]


def test_iam_features_are_the_activation_weighted_mean():
    feats = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    logits = torch.full((1, 2, 4, 4), -30.0)
    logits[0, 0, :2, :2] = 30.0          # map 0 selects the top-left 2x2 block
    logits[0, 1] = 5.0                   # map 1 is uniform: the global mean
    out = si.iam_features(logits, feats)
    assert torch.allclose(out[0, 0], feats[0, :, :2, :2].mean((1, 2)), atol=1e-4)
    assert torch.allclose(out[0, 1], feats[0].mean((1, 2)), atol=1e-4)
    # normalised: scaling the activations' strength uniformly changes nothing
    assert torch.allclose(si.iam_features(torch.full((1, 1, 4, 4), -2.0), feats),
                          si.iam_features(torch.full((1, 1, 4, 4), 2.0), feats), atol=1e-5)


def test_points_are_read_at_their_image_coordinates():
    # logits at stride 4 of a 32x32 input whose value is the cell centre's x (input pixels):
    # bilinear reading of a linear ramp returns the point's own x wherever it is interior
    xs = (torch.arange(8, dtype=torch.float32) + 0.5) * 4
    ramp = xs.view(1, 1, 8).expand(2, 8, 8).clone()
    ramp[1] = ramp[0].T.clone()  # second query: the y ramp
    pts = torch.tensor([[[10.0, 6.0], [17.5, 25.0], [4.0, 27.0]]])
    at = si.sample_at_points(ramp, pts, (32, 32))
    assert at.shape == (2, 1, 3)
    assert torch.allclose(at[0, 0], pts[0, :, 0], atol=1e-4)
    assert torch.allclose(at[1, 0], pts[0, :, 1], atol=1e-4)


def test_objectness_target_is_the_matched_mask_iou():
    # one query, one object; the query's mask covers the object and as much again: IoU 0.5
    hm = wm = 8
    masks = torch.full((1, 1, hm, wm), -10.0)
    masks[0, 0, :, :4] = 10.0
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, :, :8] = True                       # half of the predicted half, in pixels
    z = 2.0
    out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.full((1, 1), z),
           "masks": masks}
    w = si.LossWeights(objectness=1.0)
    loss = si.sparseinst_loss(out, [{"labels": torch.zeros(1, dtype=torch.long),
                                     "masks": target}], (32, 32), w)
    iou = 0.5
    expected = -(iou * math.log(torch.sigmoid(torch.tensor(z)))
                 + (1 - iou) * math.log(1 - torch.sigmoid(torch.tensor(z))))
    assert loss["loss_objectness"].item() == pytest.approx(expected, rel=1e-4)
    assert si.mask_iou(torch.tensor([[1, 1, 0, 0]], dtype=torch.bool),
                       torch.tensor([[1, 0, 0, 0]], dtype=torch.bool)).item() == 0.5
    # points: IoU estimated on the labelled points (-1 ignored)
    pred = torch.tensor([[True, True, False, False, True]])
    lab = torch.tensor([[1, 0, 1, 0, -1]])
    assert si.point_iou(pred, lab).item() == pytest.approx(1 / 3)


def test_point_loss_prefers_the_mask_the_points_describe():
    obj = torch.full((1, 1, 8, 8), -6.0)
    obj[0, 0, 2:6, 2:6] = 6.0                    # object in the middle (input 8..24 px)
    pts = torch.tensor([[[16.0, 16.0], [12.0, 20.0], [2.0, 2.0], [30.0, 16.0]]])
    lab = torch.tensor([[1, 1, 0, 0]])
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "points": pts,
               "point_labels": lab, "boxes": box}]

    def loss(m):
        out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.zeros(1, 1),
               "masks": m}
        return si.sparseinst_loss(out, sample, (32, 32), si.LossWeights(), "points")["loss_mask"]
    assert loss(obj) < 0.1 < loss(-obj)
    # the box says outside is background: a mask spilling outside costs more
    spill = obj.clone()
    spill[0, 0, :, :] = 6.0
    spill[0, 0, 0, 0] = -6.0                      # keep the background point right
    spill[0, 0, 4, 7] = -6.0
    assert loss(spill) > loss(obj)


def test_inference_score_is_the_geometric_mean_of_class_and_objectness():
    out = {"logits": torch.logit(torch.tensor([[[0.81], [0.04]]])),
           "objectness": torch.logit(torch.tensor([[0.25, 0.01]])),
           "masks": torch.zeros(1, 2, 4, 4)}
    masks, scores, labels = si.sparseinst_predict(out, 0, si.InferenceParams(
        score_threshold=0.005))
    assert scores.tolist() == pytest.approx([math.sqrt(0.81 * 0.25), math.sqrt(0.04 * 0.01)],
                                            rel=1e-4)
    masks, scores, _ = si.sparseinst_predict(out, 0, si.InferenceParams(score_threshold=0.1))
    assert len(scores) == 1


def test_model_shapes_and_a_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = si.SparseInst(ResNetFeatures("resnet18"), 1, channels=32, dim=32, num_queries=10,
                          kernel_dim=16, convs=1, groups=2)
    x = torch.randn(1, 3, 64, 64)
    out = model(x)
    assert out["masks"].shape == (1, 10, 16, 16) and out["logits"].shape == (1, 10, 1)
    assert out["iam"].shape == (1, 20, 8, 8)
    target = torch.zeros(1, 64, 64, dtype=torch.bool)
    target[0, 16:48, 8:40] = True
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "masks": target}]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = si.sparseinst_loss(model(x), sample, (64, 64), si.LossWeights())["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_box_masks_cover_every_cell_the_box_overlaps():
    inside = si.box_masks(torch.tensor([[1.2, 0.5, 2.4, 0.9]]), 4, 4)[0]
    # columns 1 and 2 overlap [1.2, 2.4], row 0 overlaps [0.5, 0.9]: a sub-cell box keeps a cell
    assert inside.nonzero().tolist() == [[0, 1], [0, 2]]


def test_matching_under_points_prefers_the_query_that_fills_the_box():
    # two queries agree with the points equally; only the second stays inside the box
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])                  # input px; cells 2..5
    fits = torch.full((8, 8), -6.0)
    fits[2:6, 2:6] = 6.0
    spills = torch.full((8, 8), 6.0)
    spills[0, 0] = -6.0
    masks = torch.stack([spills, fits])[None]
    inside = si.box_masks(box / 4, 8, 8)
    score = si.projection_score_matrix(masks[0].sigmoid(), inside)
    assert score[1, 0] > 0.99 and score[0, 0] < 0.7
    pts = torch.tensor([[[16.0, 16.0], [2.0, 2.0]]])
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "points": pts,
               "point_labels": torch.tensor([[1, 0]]), "boxes": box}]
    out = {"logits": torch.full((1, 2, 1), 5.0), "objectness": torch.zeros(1, 2),
           "masks": masks.clone().requires_grad_()}
    si.sparseinst_loss(out, sample, (32, 32), si.LossWeights(), "points")["loss"].backward()
    # only the matched query receives a mask gradient
    grad = out["masks"].grad[0].abs().flatten(1).sum(1)
    assert grad[1] > 0 and grad[0] == 0


def test_objectness_target_under_points_is_discounted_by_spill_outside_the_box():
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    pts = torch.tensor([[[16.0, 16.0], [10.0, 10.0]]])
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "points": pts,
               "point_labels": torch.tensor([[1, 1]]), "boxes": box}]
    half = torch.full((1, 1, 8, 8), -6.0)
    half[0, 0, 2:6, 0:6] = 6.0          # 16 cells inside the box, 8 outside: 2/3 inside

    def obj_loss(m, target):
        out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.logit(
            torch.tensor([[target]])), "masks": m}
        return si.sparseinst_loss(out, sample, (32, 32), si.LossWeights(),
                                  "points")["loss_objectness"].item()
    # the loss is smallest when the predicted objectness equals the discounted IoU (2/3)
    losses = {t: obj_loss(half, t) for t in (0.5, 2 / 3, 0.9)}
    assert min(losses, key=losses.get) == 2 / 3


def test_pairwise_term_prefers_the_mask_that_follows_colour_edges():
    # a red square on grey; two masks agree with the points and the box equally, one
    # follows the square's edge, the other cuts through the uniform grey inside the box
    image = torch.full((1, 3, 32, 32), 128.0)
    image[0, 0, 8:24, 8:20] = 255.0
    image[0, 1:, 8:24, 8:20] = 0.0
    follows = torch.full((1, 1, 8, 8), -6.0)
    follows[0, 0, 2:6, 2:5] = 6.0                 # cells of the red block (x 8..20 px)
    cuts = follows.clone()
    cuts[0, 0, 2:6, 5] = 6.0                      # spills one column into the grey
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    pts = torch.tensor([[[12.0, 12.0], [14.0, 18.0]]])
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "points": pts, "boxes": box,
               "point_labels": torch.tensor([[1, 1]]), "image": image[0]}]
    w = si.LossWeights(pairwise=1.0, box_projection=0.0, outside_box=0.0)

    def loss(m, weights):
        out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.zeros(1, 1),
               "masks": m}
        return si.sparseinst_loss(out, sample, (32, 32), weights, "points",
                                  image)["loss_mask"].item()
    assert loss(cuts, w) > loss(follows, w)
    # without the term the two are equal: the points alone cannot tell them apart
    off = si.LossWeights(pairwise=0.0, box_projection=0.0, outside_box=0.0)
    assert loss(cuts, off) == pytest.approx(loss(follows, off))
