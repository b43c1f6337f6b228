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
    w = si.SparseInstLoss(objectness=1.0)
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
        return si.sparseinst_loss(out, sample, (32, 32), si.SparseInstLoss(), "points")["loss_mask"]
    assert loss(obj) < 0.1 < loss(-obj)
    # the box says outside is background: a mask spilling outside costs more
    spill = obj.clone()
    spill[0, 0, :, :] = 6.0
    spill[0, 0, 0, 0] = -6.0                      # keep the background point right
    spill[0, 0, 4, 7] = -6.0
    assert loss(spill) > loss(obj)


def test_inference_score_is_the_geometric_mean_rescored_by_maskness():
    masks = torch.full((1, 2, 4, 4), -20.0)
    masks[0, 0, :2, :2] = torch.logit(torch.tensor(0.9))    # 4 pixels at 0.9
    masks[0, 0, 0, 0] = torch.logit(torch.tensor(0.6))      # one of them at 0.6
    masks[0, 1, :, :] = torch.logit(torch.tensor(0.5))      # every pixel at 0.5
    out = {"logits": torch.logit(torch.tensor([[[0.81], [0.04]]])),
           "objectness": torch.logit(torch.tensor([[0.25, 0.01]])), "masks": masks}
    geo = [math.sqrt(0.81 * 0.25), math.sqrt(0.04 * 0.01)]
    _, scores, _ = si.sparseinst_predict(out, 0, si.InferenceParams(
        score_threshold=0.005, mask_threshold=0.45, rescore="none"))
    assert scores.tolist() == pytest.approx(geo, rel=1e-4)
    # released rescoring: x mean probability of the pixels above the mask threshold
    _, scores, _ = si.sparseinst_predict(out, 0, si.InferenceParams(
        score_threshold=0.005, mask_threshold=0.45))
    assert scores.tolist() == pytest.approx([geo[0] * (0.9 * 3 + 0.6) / 4, geo[1] * 0.5],
                                            rel=1e-4)
    # the order follows the rescored value: a confident query with a hesitant mask drops
    assert si.maskness(torch.full((1, 2, 2), 0.3), 0.45).item() == 0.0
    _, scores, _ = si.sparseinst_predict(out, 0, si.InferenceParams(score_threshold=0.1))
    assert len(scores) == 1


@pytest.mark.parametrize("group_fc,head", [("expand", 4 * 8), ("project", 8)])
def test_group_features_expand_to_groups_times_dim(group_fc, head):
    d = si.IAMDecoder(6, 8, num_queries=5, num_classes=3, kernel_dim=4, convs=1, groups=4,
                      group_fc=group_fc)
    assert (d.project.in_features, d.project.out_features) == (4 * 8, head)
    assert d.cls.in_features == d.kernel.in_features == d.objectness.in_features == head
    out = d(torch.randn(2, 6, 8, 8))
    assert out["logits"].shape == (2, 5, 3) and out["masks"].shape == (2, 5, 8, 8)


def test_matching_dice_uses_squared_sums():
    prob = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    tgt = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # plain: 2 * 1 / (1 + 2); squared: 2 * 1 / (0.5 + 2)
    assert si.dice_score_matrix(prob, tgt).item() == pytest.approx(2 / 3, rel=1e-4)
    assert si.dice_score_matrix(prob, tgt, squared=True).item() == pytest.approx(0.8, rel=1e-4)


def test_objectness_target_counts_pixels_from_probability_0_4():
    masks = torch.full((1, 1, 8, 8), -10.0)
    masks[0, 0, :, :4] = 10.0
    masks[0, 0, :, 4:] = torch.logit(torch.tensor(0.45))    # between 0.4 and 0.5
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, :, :16] = True
    out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.zeros(1, 1),
           "masks": masks}
    sample = [{"labels": torch.zeros(1, dtype=torch.long), "masks": target}]

    def obj_loss(th):
        return si.sparseinst_loss(out, sample, (32, 32), si.SparseInstLoss(
            objectness_threshold=th))["loss_objectness"].item()
    # objectness logit 0: the BCE is log 2 whatever the target, so compare the gradients'
    # sign through a target read back: IoU 0.5 at >= 0.4 (whole map), 1.0 at >= 0.5
    for th, iou in ((0.4, 0.5), (0.5, 1.0)):
        z = torch.zeros(1, 1, requires_grad=True)
        loss = si.sparseinst_loss({**out, "objectness": z}, sample, (32, 32),
                                  si.SparseInstLoss(objectness_threshold=th))["loss_objectness"]
        loss.backward()
        assert z.grad.item() == pytest.approx(0.5 - iou, abs=1e-5)   # d BCE / dz = p - y
    assert obj_loss(0.4) == pytest.approx(math.log(2), rel=1e-5)


def test_drop_loss_spares_unmatched_queries_on_no_target():
    pred = torch.zeros(3, 16, dtype=torch.bool)
    pred[0, :4] = True            # matched to the target
    pred[1, 12:] = True           # no target there: perhaps a missed object -> dropped
    pred[2, 2:6] = True           # overlaps the target: a duplicate -> still background
    tgt = torch.zeros(1, 16, dtype=torch.bool)
    tgt[0, :4] = True
    drop = si.drop_mask(pred, tgt, torch.tensor([0]), 0.01)
    assert drop.tolist() == [False, True, False]
    masks = torch.where(pred.view(1, 3, 4, 4), 10.0, -10.0)
    out = {"logits": torch.zeros(1, 3, 1), "objectness": torch.zeros(1, 3), "masks": masks}
    sample = [{"labels": torch.zeros(1, dtype=torch.long),
               "masks": tgt.view(1, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2)}]
    on = si.sparseinst_loss(out, sample, (16, 16), si.SparseInstLoss(drop_loss_iou=0.01))
    off = si.sparseinst_loss(out, sample, (16, 16), si.SparseInstLoss())
    # logits 0: each query's focal term is known; dropping one background query removes its
    one_bg = 0.75 * 0.5 ** 2 * math.log(2) * 2.0       # (1 - alpha) p^g CE, x the cls weight
    assert off["loss_cls"].item() - on["loss_cls"].item() == pytest.approx(one_bg, rel=1e-4)


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
        loss = si.sparseinst_loss(model(x), sample, (64, 64), si.SparseInstLoss())["loss"]
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
    si.sparseinst_loss(out, sample, (32, 32), si.SparseInstLoss(), "points")["loss"].backward()
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
        return si.sparseinst_loss(out, sample, (32, 32), si.SparseInstLoss(),
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
    w = si.SparseInstLoss(pairwise=1.0, box_projection=0.0, outside_box=0.0)

    def loss(m, weights):
        out = {"logits": torch.full((1, 1, 1), 5.0), "objectness": torch.zeros(1, 1),
               "masks": m}
        return si.sparseinst_loss(out, sample, (32, 32), weights, "points",
                                  image)["loss_mask"].item()
    assert loss(cuts, w) > loss(follows, w)
    # without the term the two are equal: the points alone cannot tell them apart
    off = si.SparseInstLoss(pairwise=0.0, box_projection=0.0, outside_box=0.0)
    assert loss(cuts, off) == pytest.approx(loss(follows, off))
