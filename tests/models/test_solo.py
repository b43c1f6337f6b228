import pytest
import torch

from pipeline.models.backbone import ResNetFeatures
from pipeline.models.solo import (InferenceParams, Level, SOLOLoss, SOLOv2, assign_targets,
                                  solo_loss, solo_predict)

LEVELS = [Level("p2", 8, 8, (1, 24)), Level("p3", 4, 8, (16, 64))]


def box_of(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float)


def test_centre_cell_and_scale_routing():
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 20:36, 36:52] = True            # 16x16 box, centre (28, 44)
    t = assign_targets(masks, torch.tensor([0]), box_of(masks[0]), LEVELS, (64, 64), 0.2)
    lab0 = t[0]["labels"].view(8, 8)
    assert lab0[3, 5] == 0                    # int(28/64*8)=3, int(44/64*8)=5
    assert (lab0 >= 0).sum() == 1             # sigma 0.2 region is inside one cell
    assert (t[1]["labels"] >= 0).sum() == 1   # 16 px is in both ranges: both levels
    big = torch.zeros(1, 64, 64, dtype=torch.bool)
    big[0, 0:60, 0:60] = True                 # 60 px: only level 2
    t = assign_targets(big, torch.tensor([0]), box_of(big[0]), LEVELS, (64, 64), 0.2)
    assert (t[0]["labels"] >= 0).sum() == 0 and (t[1]["labels"] >= 0).sum() >= 1


def test_centre_region_grows_with_sigma_and_is_capped():
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 8:56, 8:56] = True
    t = assign_targets(masks, torch.tensor([0]), box_of(masks[0]),
                       [Level("p2", 16, 8, (1, 100))], (64, 64), sigma=1.0)
    pos = (t[0]["labels"] >= 0).view(16, 16)
    assert pos.sum() == 9                     # at most one cell around the centre cell
    assert pos[7:10, 7:10].all()


def test_smaller_instance_wins_shared_cell():
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:50, 10:50] = True             # big, centre (30, 30)
    masks[1, 26:34, 26:34] = True             # small, same centre cell
    boxes = torch.cat([box_of(masks[0]), box_of(masks[1])])
    t = assign_targets(masks, torch.tensor([0, 0]), boxes,
                       [Level("p2", 8, 8, (1, 100))], (64, 64), 0.2)
    assert t[0]["index"].view(8, 8)[3, 3] == 1


def tiny_model():
    torch.manual_seed(0)
    return SOLOv2(ResNetFeatures("resnet18"), LEVELS, fpn_channels=16, head_channels=16,
                  head_convs=1, mask_channels=16, mask_branch_channels=16)


def test_forward_shapes_and_predict():
    m = tiny_model().eval()
    out = m(torch.randn(2, 3, 64, 96))
    assert [tuple(c.shape) for c in out["cate"]] == [(2, 1, 8, 8), (2, 1, 4, 4)]
    assert tuple(out["mask_feat"].shape) == (2, 16, 16, 24)
    soft, score, label = solo_predict(m, out, 0, InferenceParams(score_threshold=0.0))
    assert soft.shape[1:] == (16, 24) and len(score) == len(label)
    assert torch.all(score[:-1] >= score[1:])


def test_overfits_one_image_with_weak_losses():
    """A few steps on one image with a pseudo-mask: the loss falls and the mask appears."""
    m = tiny_model()
    img = torch.full((1, 3, 64, 64), 40.0)
    img[0, :, 16:40, 20:44] = 220.0
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 16:40, 20:44] = True
    sample = {"masks": mask, "labels": torch.tensor([0]), "boxes": box_of(mask[0])}
    w = SOLOLoss(pairwise_warmup=1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for it in range(40):
        out = m((img - 128) / 64)
        losses = solo_loss(m, out, [sample], img, torch.ones(1, 64, 64, dtype=torch.bool), w, it)
        first = first if first is not None else losses["loss"].item()
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert losses["loss"].item() < 0.5 * first
    m.eval()
    soft, score, _ = solo_predict(m, m((img - 128) / 64), 0, InferenceParams(score_threshold=0.05))
    assert len(soft)
    pred = torch.nn.functional.interpolate(soft[:1, None], size=(64, 64))[0, 0] > 0.5
    iou = (pred & mask[0]).sum() / (pred | mask[0]).sum()
    assert iou > 0.6


def test_point_nms_keeps_one_peak_per_object():
    from pipeline.models.solo import point_nms
    # SOLOv2's window is the 2x2 ending at the cell: a peak removes its right, lower and
    # lower-right neighbours (the released points_nms, kernel 2)
    heat = torch.zeros(1, 6, 6)
    heat[0, 2:4, 2:4] = torch.tensor([[0.9, 0.6], [0.7, 0.5]])
    heat[0, 0, 5] = 0.3                                    # a second, separate object
    out = point_nms(heat)
    assert out.nonzero().tolist() == [[0, 0, 5], [0, 2, 2]]
    assert out[0, 2, 2] == 0.9 and out[0, 0, 5] == 0.3    # peaks keep their score


def test_point_nms_removes_neighbour_candidates_in_prediction():
    m = tiny_model().eval()
    out = m(torch.randn(1, 3, 64, 96))
    with_nms = solo_predict(m, out, 0, InferenceParams(score_threshold=0.0,
                                                       update_threshold=0.0, max_per_image=500))
    without = solo_predict(m, out, 0, InferenceParams(score_threshold=0.0, point_nms=False,
                                                      update_threshold=0.0, max_per_image=500))
    assert 0 < len(with_nms[1]) < len(without[1])


def test_level_mean_weighs_each_fpn_level_equally():
    from pipeline.models.solo import level_mean
    values = torch.tensor([1.0, 1.0, 1.0, 4.0])      # three cells on level 0, one on level 2
    level = torch.tensor([0, 0, 0, 2])
    assert level_mean(values, level).item() == pytest.approx((1.0 + 4.0) / 2)
    assert values.mean().item() == pytest.approx(7 / 4)  # what per-cell averaging would give


def test_split_feats_halves_p2_and_leaves_other_levels():
    """SOLOv2's released head input: P2 is halved before it is resized to its grid; the
    other levels here (P3) are resized directly either way."""
    m = tiny_model().eval()
    x = torch.randn(1, 3, 96, 96)   # P2 24 x 24 -> 12 x 12 -> grid 8, not 24 -> 8 at once
    with torch.no_grad():
        m.split_feats = True
        on = m(x)
        m.split_feats = False
        off = m(x)
    assert not torch.allclose(on["cate"][0], off["cate"][0])
    assert torch.equal(on["cate"][1], off["cate"][1])
    assert torch.equal(on["mask_feat"], off["mask_feat"])


def test_drop_weights_spare_negative_cells_on_no_target():
    from pipeline.models.solo import drop_weights
    mf = torch.zeros(3, 4, 4)
    mf[0, :2, :2] = 1.0          # channel 0: the target's place
    mf[1, 2:, 2:] = 1.0          # channel 1: somewhere no target is
    mf[2] = 1.0                  # channel 2: everywhere
    kernels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, -1.0, -1.0]])
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, :2, :2] = True
    positive = torch.tensor([False, False, False, False])
    w = drop_weights(kernels - 0.5 * (kernels > 0), mf, target, positive, 0.01)
    # cell 0 overlaps the target (background there is a real error), cell 1 does not
    # (dropped), cell 2 covers it (IoU 1/4), cell 3 predicts nothing (IoU 0: dropped)
    assert w.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert drop_weights(kernels, mf, target, torch.tensor([False, True, False, True]),
                        0.01).tolist() == [1.0, 1.0, 1.0, 1.0]     # positives never drop
    assert drop_weights(kernels, mf, target[:0], positive, 0.01).tolist() == [1.0] * 4


def test_drop_loss_lowers_only_the_category_loss():
    m = tiny_model()
    img = torch.full((1, 3, 64, 64), 40.0)
    img[0, :, 16:40, 20:44] = 220.0
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 16:40, 20:44] = True
    sample = [{"masks": mask, "labels": torch.tensor([0]), "boxes": box_of(mask[0])}]
    out = m(img)
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    off = solo_loss(m, out, sample, img, valid, SOLOLoss(dice=3.0), 0)
    on = solo_loss(m, out, sample, img, valid, SOLOLoss(dice=3.0, drop_loss_iou=0.01), 0)
    assert on["loss_cate"] < off["loss_cate"]
    assert torch.equal(on["loss_dice"], off["loss_dice"])


def test_box_masks_hold_the_pixels_whose_centre_is_in_the_box():
    from pipeline.models.solo import box_masks
    m = box_masks(torch.tensor([[2.0, 3.0, 6.0, 5.0]]), (8, 8))
    assert m.shape == (1, 8, 8) and m.sum() == 4 * 2
    assert m[0, 3:5, 2:6].all()


def test_point_mask_loss_reads_the_logits_at_the_points():
    """A ramp in x over a 16 x 16 input at stride 4: cell j's logit is j - 1.5. A point at
    input x = 4 j + 2 is cell j's centre; points labelled -1 weigh 0 but count in the mean."""
    import math
    from pipeline.models.solo import point_mask_loss
    logits = (torch.arange(4.0) - 1.5).expand(1, 4, 4).clone().requires_grad_()
    points = torch.tensor([[[10.0, 6.0], [2.0, 14.0], [6.0, 6.0]]])   # cells 2, 0, 1 in x
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    loss = point_mask_loss(logits, points, labels, (16, 16))
    want = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(-1.5)) + 0.0) / 3
    assert loss.shape == (1,) and loss.item() == pytest.approx(want, abs=1e-6)
    loss.sum().backward()
    assert logits.grad[0, :, 1].abs().sum() == 0      # the ignored point's cell gets nothing


def test_learns_a_mask_from_points_alone():
    """solo=points: a box and points, no mask: the cells are assigned around the box's
    centre and the point loss alone draws the object (a disc in its box)."""
    m = tiny_model()
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    disc = (yy - 28) ** 2 + (xx - 32) ** 2 <= 12 ** 2
    img = torch.full((1, 3, 64, 64), 40.0)
    img[0, :, disc] = 220.0
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([torch.randint(20, 44, (20,), generator=g),
                       torch.randint(16, 40, (20,), generator=g)], 1).float() + 0.5
    labels = disc[pts[:, 1].long(), pts[:, 0].long()].float()
    assert 0 < labels.sum() < 20                       # object and background points
    sample = {"labels": torch.tensor([0]), "boxes": box_of(disc),
              "points": pts[None], "point_labels": labels[None]}
    w = SOLOLoss(dice=0.0, proj_max=0.0, proj_mean=0.0, pairwise=0.0, points=3.0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    valid = torch.ones(1, 64, 64, dtype=torch.bool)
    for it in range(40):
        losses = solo_loss(m, m((img - 128) / 64), [sample], img, valid, w, it)
        first = losses["loss"].item() if it == 0 else first
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert set(losses) == {"loss_cate", "loss_points", "loss"}
    assert losses["loss"].item() < 0.5 * first
    m.eval()
    soft, _, _ = solo_predict(m, m((img - 128) / 64), 0, InferenceParams(score_threshold=0.05))
    assert len(soft)
    pred = torch.nn.functional.interpolate(soft[:1, None], size=(64, 64))[0, 0] > 0.5
    # 20 points draw the disc roughly (IoU 0.49 measured); a mask off the object scores ~0
    assert (pred & disc).sum() / (pred | disc).sum() > 0.4


def test_point_loss_needs_points():
    m = tiny_model()
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 16:40, 20:44] = True
    sample = [{"masks": mask, "labels": torch.tensor([0]), "boxes": box_of(mask[0])}]
    img = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="points"):
        solo_loss(m, m(img), sample, img, torch.ones(1, 64, 64, dtype=torch.bool),
                  SOLOLoss(points=1.0), 0)
