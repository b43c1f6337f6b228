"""AdaMixer: 3D sampling, adaptive mixing shapes, matching, set loss, box refinement,
mask head levels and losses."""
import math

import pytest
import torch

from pipeline.models.adamixer import AdaMixer, InferenceParams
from pipeline.models.adamixer.boxes import (iof, refine_xyzr, whole_image_xyzr, xyxy_to_xyzr,
                                            xyzr_to_xyxy)
from pipeline.models.adamixer.mask_head import select_levels
from pipeline.supervision import as_supervision
from pipeline.models.adamixer.mixing import AdaptiveMixing
from pipeline.models.adamixer.sampling import level_weights, sample_3d
from pipeline.models.adamixer.set_loss import SetLossWeights, hungarian_match, set_loss
from pipeline.models.backbone import ResNetFeatures

STRIDES = (4, 8, 16, 32)


def space(size=64, dim=8, seed=0):
    """A random 3D feature space over a size x size input: one map per stride."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, dim, size // s, size // s, generator=g) for s in STRIDES]


def point(x, y, z, groups=1):
    """(1, 1, groups, 1, 3): the same point for every group."""
    return torch.tensor([x, y, z]).view(1, 1, 1, 1, 3).expand(1, 1, groups, 1, 3)


def read(levels, pt, tau, groups=1):
    """-> (D,) the sampled feature, groups concatenated."""
    return sample_3d(pt, levels, STRIDES, tau)[0, 0, :, 0].reshape(-1)


def test_sampling_returns_the_feature_at_an_integer_location_and_level():
    levels = space()
    for j, s in enumerate(STRIDES):
        for (i, k) in ((0, 0), (1, 0), (64 // s - 1, 64 // s - 1)):
            # cell (i, k) of level j is centred at ((k + 0.5) s, (i + 0.5) s) input pixels
            pt = point((k + 0.5) * s, (i + 0.5) * s, math.log2(s), groups=2)
            # a sharp level kernel: exactly that level's feature
            assert torch.allclose(read(levels, pt, 1e-4, 2), levels[j][0, :, i, k], atol=1e-6)
            # the paper's tau = 2: the Gaussian mix of every level's feature at that point
            w = level_weights(torch.tensor(math.log2(s)), torch.log2(torch.tensor(
                [float(v) for v in STRIDES])), 2.0)
            assert w.argmax() == j and torch.isclose(w.sum(), torch.tensor(1.0))
    # a one-level space: exactly the feature whatever tau
    one = [levels[1]]
    got = sample_3d(point(12.0, 20.0, 3.0), one, (8,), 2.0)[0, 0, 0, 0]
    assert torch.allclose(got, levels[1][0, :, 2, 1], atol=1e-6)


def test_sampling_interpolates_between_levels_and_locations():
    levels = space()
    # (24, 24) px: the centre of cell (1, 1) at stride 16, the corner of 4 cells at stride 8;
    # halfway between the two levels: the mean of both readings (sharp kernel) ...
    mid = read(levels, point(24.0, 24.0, 3.5), 1e-3)
    at8 = levels[1][0, :, 2:4, 2:4].mean((1, 2))
    assert torch.allclose(mid, (at8 + levels[2][0, :, 1, 1]) / 2, atol=1e-5)
    # ... and with the paper's tau the two nearest levels weigh the same
    w = level_weights(torch.tensor(3.5), torch.tensor([2.0, 3.0, 4.0, 5.0]), 2.0)
    assert w[1] == pytest.approx(w[2].item()) and w[1] > w[0] and w[2] > w[3]
    # bilinear in space: halfway between two cell centres of one level
    a = (levels[0][0, :, 1, 1] + levels[0][0, :, 1, 2]) / 2
    assert torch.allclose(read(levels, point(8.0, 6.0, 2.0), 1e-4), a, atol=1e-5)


def test_each_group_reads_its_own_channels():
    levels = space(dim=8)
    pt = point(10.0, 10.0, 2.0, groups=4)
    out = sample_3d(pt, levels, STRIDES, 1e-4)                     # (1, 1, 4, 1, 2)
    assert out.shape == (1, 1, 4, 1, 2)
    assert torch.allclose(out[0, 0, :, 0].reshape(-1), levels[0][0, :, 2, 2], atol=1e-6)


def test_mixing_weights_have_the_papers_shapes():
    # paper defaults: d_feat 256, G 4 -> C = 64 channels per group; P_in 32, P_out 128
    mix = AdaptiveMixing(query_dim=256, feat_dim=256, groups=4, in_points=32, out_points=128)
    query = torch.randn(2, 5, 256)
    mc, ms = mix.weights(query)
    assert mc.shape == (2, 5, 4, 64, 64)          # channel mixing: C x C per group
    assert ms.shape == (2, 5, 4, 128, 32)         # spatial mixing: P_in -> P_out per group
    assert mix.generator.out_features == 4 * (64 * 64 + 32 * 128)
    out = mix(torch.randn(2, 5, 4, 32, 64), query)
    assert out.shape == query.shape
    # generated from the query: other queries, other weights (once the generator is trained)
    torch.nn.init.normal_(mix.generator.weight, std=0.01)
    mc2, _ = mix.weights(torch.randn(2, 5, 256))
    assert not torch.allclose(mc2[0, 0], mc2[0, 1])


def test_boxes_round_trip_and_refinement_moves_in_units_of_the_scale():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 64.0, 16.0]])
    xyzr = xyxy_to_xyzr(boxes)
    assert torch.allclose(xyzr_to_xyxy(xyzr), boxes, atol=1e-4)
    assert xyzr[1, 2].item() == pytest.approx(5.0) and xyzr[1, 3].item() == pytest.approx(-2.0)
    moved = refine_xyzr(xyzr, torch.tensor([[0.5, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    scale = 2 ** xyzr[0, 2]
    assert moved[0, 0].item() == pytest.approx((xyzr[0, 0] + 0.5 * scale).item())
    w, h = (xyzr_to_xyxy(moved)[0, 2:] - xyzr_to_xyxy(moved)[0, :2]).tolist()
    assert (w, h) == pytest.approx((80.0, 160.0), rel=1e-4)   # z + 1: twice the size
    full = whole_image_xyzr(torch.tensor([[100, 60]]))
    assert torch.allclose(xyzr_to_xyxy(full), torch.tensor([[0.0, 0.0, 60.0, 100.0]]), atol=1e-4)
    # IoF: a box inside another is covered entirely; the other only by their area ratio
    f = iof(torch.tensor([[[0.0, 0, 10, 10], [0, 0, 20, 20]]]))
    assert f[0, 0, 1].item() == pytest.approx(1.0) and f[0, 1, 0].item() == pytest.approx(0.25)


def random_stage(q=8, m=3, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(q, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 4 + torch.rand(q, 2, generator=g) * 30], 1)
    gxy = torch.rand(m, 2, generator=g) * 60
    gt = torch.cat([gxy, gxy + 4 + torch.rand(m, 2, generator=g) * 30], 1)
    return (torch.randn(q, k, generator=g), boxes,
            {"labels": torch.randint(0, k, (m,), generator=g), "boxes": gt})


def test_matching_assigns_each_object_once_to_its_best_query():
    logits, boxes, t = random_stage(q=10, m=4)
    q, m = hungarian_match(logits, boxes, t["labels"], t["boxes"],
                           torch.tensor([100.0, 100, 100, 100]), SetLossWeights())
    assert sorted(m.tolist()) == [0, 1, 2, 3] and len(set(q.tolist())) == 4
    # a query that already sits on an object with its class takes it
    boxes[7] = t["boxes"][2]
    logits[7] = -5.0
    logits[7, t["labels"][2]] = 5.0
    q, m = hungarian_match(logits, boxes, t["labels"], t["boxes"],
                           torch.tensor([100.0, 100, 100, 100]), SetLossWeights())
    assert dict(zip(m.tolist(), q.tolist()))[2] == 7


def test_set_loss_is_permutation_invariant():
    logits, boxes, t = random_stage(q=8, m=3)
    whwh = torch.tensor([[100.0, 100, 100, 100]])
    w = SetLossWeights()
    base, _ = set_loss(logits[None], boxes[None], [t], whwh, w)
    qp, mp = torch.randperm(8), torch.tensor([2, 0, 1])
    shuffled, _ = set_loss(logits[qp][None], boxes[qp][None],
                           [{"labels": t["labels"][mp], "boxes": t["boxes"][mp]}], whwh, w)
    for k in base:
        assert shuffled[k].item() == pytest.approx(base[k].item(), rel=1e-5), k
    assert base["loss_l1"] > 0 and base["loss_giou"] > 0


def tiny_adamixer(**kw):
    torch.manual_seed(0)
    return AdaMixer(ResNetFeatures("resnet18", "frozen_bn"), 1, num_queries=6, dim=32, feat_dim=32,
                    stages=2, heads=2, ffn_dim=64, in_points=8, out_points=16,
                    mask_channels=16, mask_convs=1, xy_unit=64.0, **kw)


def test_a_query_box_moves_toward_its_target_in_a_few_steps():
    model = tiny_adamixer()
    image = torch.randn(1, 3, 64, 64)
    sizes = torch.tensor([[64, 64]])
    target = torch.tensor([[8.0, 12.0, 30.0, 40.0]])
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 12:40, 8:30] = True
    t = [{"labels": torch.zeros(1, dtype=torch.long), "boxes": target, "masks": mask}]

    def best_iou():
        model.eval()
        with torch.no_grad():
            boxes = model(image, sizes)["stages"][-1]["boxes"][0]
        from torchvision.ops import box_iou
        return box_iou(boxes, target).max().item()
    before = best_iou()        # every query starts on the whole image
    assert before == pytest.approx(22 * 28 / 64 ** 2, rel=1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ious = []
    for _ in range(20):
        model.train()
        loss = model(image, sizes, t)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        ious.append(best_iou())
    # seen: 0.15 -> 0.28 in 20 steps, rising at every step
    assert ious[-1] > before + 0.08 and ious[-1] > ious[9] > before


def test_mask_head_reads_the_level_the_box_scale_selects():
    boxes = torch.tensor([[0.0, 0, 224, 224], [0, 0, 56, 56], [0, 0, 900, 900], [0, 0, 8, 8]])
    # 224 px at 14 cells: stride 16 (Mask R-CNN's rule); 56 px: stride 4; clamped at the ends
    assert select_levels(boxes, STRIDES, 14).tolist() == [2, 0, 3, 0]


def test_mask_head_loss_full_and_points():
    logits = torch.zeros(2, 1, 28, 28, requires_grad=True)
    boxes = [torch.tensor([[0.0, 0, 32, 32], [0, 0, 16, 16]])]
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True
    t = {"labels": torch.zeros(1, dtype=torch.long), "masks": masks,
         "points": torch.tensor([[[4.5, 4.5], [28.5, 28.5]]]),
         "point_labels": torch.tensor([[1.0, 0.0]])}
    objects = [torch.tensor([0, 0])]
    full = as_supervision("full").roi_mask_loss(logits, boxes, objects, [t])
    pts = as_supervision("points").roi_mask_loss(logits, boxes, objects, [t])
    assert full.item() == pytest.approx(math.log(2), rel=1e-4)   # logits 0: BCE log 2
    assert pts.item() == pytest.approx(math.log(2) * 3 / 4, rel=1e-4)  # 1 of 4 points outside
    pts.backward()
    assert logits.grad[1].abs().sum() == 0 or logits.grad[0].abs().sum() > 0


def test_prediction_gives_masks_scores_and_boxes_at_the_input_size():
    model = tiny_adamixer().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96), torch.tensor([[64, 96], [50, 80]]))
    masks, scores, labels, boxes = model.predict(out, 1, (50, 80),
                                                 InferenceParams(max_per_image=4))
    assert masks.shape == (4, 1, 50, 80) and scores.shape == labels.shape == (4,)
    assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 50).all()
    assert (scores[:-1] >= scores[1:]).all()


def test_boxes_and_sampling_stay_float32_under_bfloat16_autocast():
    model = tiny_adamixer()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 64, 64), torch.tensor([[64, 64]]))
    assert out["levels"][0].dtype == torch.bfloat16            # the features are reduced
    assert all(s["boxes"].dtype == torch.float32 for s in out["stages"])  # the boxes are not
    # a point 0.1 px off a cell centre, on bfloat16 maps: read at that location, not at the
    # 0.125 px step a bfloat16 grid has at x ~ 58 on a 64 px input (58.1 would read 58.125)
    levels = [lv.to(torch.bfloat16) for lv in space()]
    pt = point(58.1, 58.0, 2.0)
    got = sample_3d(pt, levels, STRIDES, 1e-3)[0, 0, 0, 0]
    want = sample_3d(pt, [lv.float() for lv in levels], STRIDES, 1e-3)[0, 0, 0, 0]
    assert torch.allclose(got.float(), want, atol=1e-6)


def test_backbone_lr_mult_sets_the_backbones_step():
    from omegaconf import OmegaConf

    from pipeline.models.students import AdaMixerStudent
    student = AdaMixerStudent.__new__(AdaMixerStudent)
    student.model = tiny_adamixer()
    t = OmegaConf.create({"lr": 1e-3, "weight_decay": 1e-4, "backbone_lr_mult": 0.1})
    opt = student.optimizer(t, student.model.parameters())
    lrs = {len(g["params"]): g["lr"] for g in opt.param_groups}
    backbone = len(list(student.model.backbone.parameters()))
    assert lrs[backbone] == pytest.approx(1e-4)
    assert sum(lrs) == len(list(student.model.parameters())) and len(lrs) == 2


def test_matching_l1_cost_is_on_centre_and_size_as_released():
    # one object, two queries: A is the object shifted right by 0.1 of the image, B the object
    # widened by 0.07 on each side. On (cx, cy, w, h), A is nearer (0.10 vs 0.14); on corners,
    # B would be (0.14 vs 0.20)
    whwh = torch.tensor([100.0, 100, 100, 100])
    gt = torch.tensor([[40.0, 40, 60, 60]])
    boxes = torch.tensor([[50.0, 40, 70, 60], [33.0, 40, 67, 60]])
    q, m = hungarian_match(torch.zeros(2, 1), boxes, torch.tensor([0]), gt, whwh,
                           SetLossWeights(cls=0.0, l1=1.0, giou=0.0))
    assert q.tolist() == [0] and m.tolist() == [0]


def test_stage_output_projections_start_xavier_uniform_as_released():
    from pipeline.models.adamixer.stage import DecoderStage
    torch.manual_seed(0)
    stage = DecoderStage(1, dim=64, feat_dim=64, heads=4, ffn_dim=256)
    for lin in (stage.attention.attn.out_proj, stage.mixing.out_proj):
        fan_out, fan_in = lin.weight.shape
        xavier = math.sqrt(6.0 / (fan_in + fan_out))
        # PyTorch's default bound is 1 / sqrt(fan_in): 0.011 for the mixing's 8192 inputs,
        # where xavier's is 0.027
        assert 0.9 * xavier < lin.weight.abs().max() <= xavier
    assert (stage.mixing.generator.weight == 0).all()
    assert (stage.offsets.linear.weight == 0).all() and (stage.reg.weight == 0).all()


@pytest.mark.parametrize("neck", ["none", "fpn"])
def test_feature_space_levels_and_the_fpn_necks_top_down_path(neck):
    from pipeline.models.adamixer.feature_space import FeatureSpace3D
    torch.manual_seed(0)
    chans = {"res2": 8, "res3": 16, "res4": 32, "res5": 64}
    fs = FeatureSpace3D(chans, 32, neck=neck)
    feats = {n: torch.randn(1, c, 64 // s, 64 // s)
             for (n, c), s in zip(chans.items(), STRIDES)}
    out = fs(feats)
    assert [tuple(x.shape) for x in out] == [(1, 32, 64 // s, 64 // s) for s in STRIDES]
    # the pyramid carries res5 down to the finest level; the released 1x1 projections do not
    feats["res5"] = feats["res5"] + 1.0
    changed = not torch.allclose(fs(feats)[0], out[0])
    assert changed == (neck == "fpn")
