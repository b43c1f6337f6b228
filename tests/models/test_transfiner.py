"""Mask Transfiner's parts on hand-made masks: incoherence targets, quadtree, refinement only
at incoherent nodes, losses that vanish where they should, and a refiner that learns what a
28 x 28 mask cannot hold (which the unrefined mask fails)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import MultiScaleRoIAlign

from pipeline.eval.boundary import boundary_iou
from pipeline.models.transfiner import quadtree
from pipeline.models.transfiner.incoherence import downsample, incoherent_cells
from pipeline.models.transfiner.losses import point_refinement_loss, refinement_loss
from pipeline.models.transfiner.model import (TransfinerParams, TransfinerRefiner,
                                              transfiner_losses)


def disc(size, radius, cy=None, cx=None):
    cy = size / 2 if cy is None else cy
    cx = size / 2 if cx is None else cx
    y, x = np.mgrid[:size, :size] + 0.5
    return torch.from_numpy((y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2)


def test_incoherent_cells_of_a_disc_are_its_lossy_ring():
    fine = disc(56, 20)[None]
    inc = incoherent_cells(fine)[0]
    assert inc.shape == (28, 28)
    # the paper's definition: what down- (area vote) then up-sampling (nearest) loses
    up = downsample(fine, 28).float()[:, None].repeat_interleave(2, 2).repeat_interleave(2, 3)
    lost = up[:, 0].bool() != fine
    assert torch.equal(inc, F.max_pool2d(lost.float()[:, None], 2)[0, 0].bool())
    # a ring: every incoherent cell is crossed by the circle (radius 10 cells), none inside
    # or outside; and it goes all round (each quadrant holds a quarter of it)
    y, x = np.mgrid[:28, :28] + 0.5
    dist = np.hypot(y - 14, x - 14)
    ys, xs = np.nonzero(inc.numpy())
    assert inc.any() and (np.abs(dist[ys, xs] - 10) <= np.sqrt(2) / 2 + 1e-6).all()
    assert not inc[dist < 9].any() and not inc[dist > 11].any()
    quarters = [int(inc[a:a + 14, b:b + 14].sum()) for a in (0, 14) for b in (0, 14)]
    assert len(set(quarters)) == 1 and quarters[0] > 0      # symmetric, all round
    # by hand: a cell is incoherent iff the circle separates its 4 pixel centres
    inside = lambda py, px: (py + 0.5 - 28) ** 2 + (px + 0.5 - 28) ** 2 <= 400  # noqa: E731
    expected = {(i, j) for i in range(28) for j in range(28)
                if len({inside(2 * i + a, 2 * j + b) for a in (0, 1) for b in (0, 1)}) == 2}
    assert set(zip(ys.tolist(), xs.tolist())) == expected
    assert not incoherent_cells(torch.ones(1, 56, 56, dtype=torch.bool)).any()


def test_quadtree_node_counts_per_level():
    root = torch.zeros(2, 28, 28, dtype=torch.bool)
    root[0, 5, 7] = root[0, 5, 8] = root[0, 20, 3] = True
    root[1, 0, 0] = root[1, 27, 27] = True
    levels = quadtree.build(root, lambda level, nodes: nodes[:, 3] % 2 == 0, depth=3)
    assert [len(n) for n in levels] == [5, 20, 40]   # 5 roots, 4 children each, 10 of 20 split
    assert [n[:, 1].unique().tolist() for n in levels] == [[0], [1], [2]]
    kids = quadtree.children(torch.tensor([[0, 0, 5, 7]]))
    assert kids.tolist() == [[0, 1, 10, 14], [0, 1, 10, 15], [0, 1, 11, 14], [0, 1, 11, 15]]
    assert (levels[2][:, 2:] < 112).all() and (levels[1][:, 2:] < 56).all()
    capped = quadtree.cap_per_roi(levels[0], torch.arange(5.0), 1)
    assert sorted(capped[:, 0].tolist()) == [0, 1]


def wavy(size, radius, lobes=24, amplitude=0.04):
    """A disc whose radius waves by +-amplitude (fraction of the image) around `radius`:
    detail finer than a 28 x 28 grid's cells (lobes ~ 2 cells apart at 28)."""
    y, x = np.mgrid[:size, :size] + 0.5
    dy, dx = y - size / 2, x - size / 2
    r = radius + amplitude * size * np.sin(lobes * np.arctan2(dy, dx))
    return torch.from_numpy(dy ** 2 + dx ** 2 <= r ** 2)


def toy(params, size=224, n=2):
    """RoIs over wavy discs filling 224 x 224 images; the coarse 28 x 28 mask is the shape
    area-sampled to 28 x 28 (what Mask R-CNN's grid can hold at best); p2..p5 hold the true
    shape, the fine cue the refiner may read at the nodes."""
    fine, coarse, feats = [], [], {}
    for i in range(n):
        r = 0.3 * size + 8 * i
        gt = wavy(size, r).float()
        fine.append(wavy(2 * params.sizes[-1], r * 2 * params.sizes[-1] / size))
        coarse.append(F.interpolate(gt[None, None], size=(28, 28), mode="area")[0, 0])
        for k in (2, 3, 4, 5):
            m = F.avg_pool2d(gt[None, None], 2 ** k)
            feats.setdefault(f"p{k}", []).append(torch.cat([m * 2 - 1, torch.ones_like(m)], 1))
    feats = {k: torch.cat(v) for k, v in feats.items()}
    boxes = torch.tensor([[0.0, 0.0, size, size]] * n)
    image_of_roi = torch.arange(n)
    pool = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 14, 2)
    roi = pool(feats, list(boxes[:, None]), [(size, size)] * n)
    return feats, image_of_roi, boxes, roi, torch.stack(coarse), torch.stack(fine)


def small(**kw):
    return TransfinerParams(dim=32, layers=1, heads=4, detector_width=16, **kw)


def test_refinement_changes_only_incoherent_nodes():
    torch.manual_seed(0)
    p = small()
    refiner = TransfinerRefiner(2, p).eval()
    feats, img, boxes, roi, coarse, fine = toy(p)
    from pipeline.models.transfiner.incoherence import incoherence_targets
    inc = incoherence_targets(fine, p.sizes)
    with torch.no_grad():
        out = refiner(feats, img, boxes, roi, coarse, inc)
    nodes = out["nodes"]
    counts = [int((nodes[:, 1] == lv).sum()) for lv in range(3)]
    assert counts[0] == int(inc[0].sum()) and counts[1] == 4 * counts[0]
    split = inc[1][nodes[nodes[:, 1] == 1][:, 0], nodes[nodes[:, 1] == 1][:, 2],
                   nodes[nodes[:, 1] == 1][:, 3]]
    assert counts[2] == 4 * int(split.sum()) > 0
    base = F.interpolate(coarse[:, None], size=(112, 112), mode="bilinear",
                         align_corners=False)[:, 0]
    cover = quadtree.coverage(nodes, len(boxes), p.sizes)
    assert torch.equal(out["masks"][cover < 0], base[cover < 0])        # untouched elsewhere
    expected = out["logits"].sigmoid()[cover[cover >= 0]]
    assert torch.allclose(out["masks"][cover >= 0], expected)             # finest node wins
    assert 0 < (cover >= 0).float().mean() < 0.5                          # a band, not all


def test_losses_are_zero_where_they_should_be():
    empty = torch.zeros(0, requires_grad=True)
    assert refinement_loss(empty, torch.zeros(0)).item() == 0.0
    # one RoI, one level-0 node covering 112-grid pixels (0..3, 0..3) of box [0, 0, 112, 112]
    nodes = torch.tensor([[0, 0, 0, 0]])
    cover = quadtree.coverage(nodes, 1, (28, 56, 112))
    logits = torch.tensor([3.0], requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 112.0, 112.0]])
    far = torch.tensor([[[50.0, 50.0], [2.0, 2.0]]])          # (x, y); the 2nd is in the node
    loss = point_refinement_loss(logits, cover, boxes, far, torch.tensor([[1, -1]]))
    assert loss.item() == 0.0                                 # no labelled point in a node
    loss.backward()                                           # and it still backpropagates
    hit = point_refinement_loss(logits, cover, boxes, far, torch.tensor([[1, 0]]))
    assert hit.item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    # a RoI whose mask is uniform has no incoherent cell: no node, refinement loss 0
    torch.manual_seed(0)
    p = small()
    feats, img, boxes, roi, coarse, fine = toy(p, n=1)
    losses = transfiner_losses(TransfinerRefiner(2, p), feats, img, boxes, roi,
                               torch.ones_like(coarse), torch.ones_like(fine))
    assert losses["loss_refine"].item() == 0.0 and losses["loss_incoherence"].item() > 0


def fit(p, steps, blank_fpn=False):
    """A refiner trained on the toy RoIs; blank_fpn: the FPN maps the nodes read carry no
    shape (all ones; the RoI features of the incoherence detector still do) and
    features["image"] holds the shapes as a 3-channel image (the `pixels` cue)."""
    torch.manual_seed(0)
    refiner = TransfinerRefiner(2, p)
    feats, img, boxes, roi, coarse, fine = toy(p)
    if blank_fpn:
        shapes = torch.stack([wavy(224, 0.3 * 224 + 8 * i).float() for i in range(len(boxes))])
        feats = {k: torch.ones_like(v) for k, v in feats.items()}
        feats["image"] = (shapes * 2 - 1)[:, None].repeat(1, 3, 1, 1)
    opt = torch.optim.Adam(refiner.parameters(), lr=3e-3)
    for _ in range(steps):
        losses = transfiner_losses(refiner, feats, img, boxes, roi, coarse, fine)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return refiner.eval(), (feats, img, boxes, roi, coarse, fine)


def boundary_quality(masks, fine):
    gt = downsample(fine, 112)
    return float(np.mean([boundary_iou(m.numpy() >= 0.5, g.numpy())
                          for m, g in zip(masks, gt)]))


def test_refiner_recovers_what_the_coarse_mask_lost_and_fails_without_refinement():
    """Trained on full masks, the refiner (its quadtree from its own detector at test time)
    recovers the lobes of a wavy disc that its 28 x 28 mask cannot hold (Boundary IoU at
    112 x 112: 0.58 unrefined, 0.80 refined after 150 steps); the unrefined mask fails."""
    p = small(max_nodes=400)
    refiner, (feats, img, boxes, roi, coarse, fine) = fit(p, 150)
    with torch.no_grad():
        refined = refiner(feats, img, boxes, roi, coarse)["masks"]
    unrefined = F.interpolate(coarse[:, None], size=(112, 112), mode="bilinear",
                              align_corners=False)[:, 0]
    goal = 0.7
    assert boundary_quality(refined, fine) >= goal
    assert boundary_quality(unrefined, fine) < goal       # refinement disabled: fails


def test_pixels_cue_carries_the_detail_when_the_fpn_maps_lack_it():
    """FPN maps without the shape (as p2, stride 4, is on 160 px images for 1 px cells): with
    `pixels` the nodes read the image and recover the lobes; without, the same training
    does not (Boundary IoU at 112 x 112: 0.94 with, 0.51 without, 0.58 unrefined)."""
    with_cue, without, unrefined = cue_quality(pixels=True)
    assert with_cue >= unrefined + 0.08
    assert without < unrefined + 0.03


def cue_quality(**cue):
    """Boundary IoU of refiners trained with FPN maps that lack the shape, with and without
    the cue `cue` names (its other settings the same), and of the unrefined mask."""
    name = next(k for k, v in cue.items() if v is True)
    quality = {}
    for on in (True, False):
        p = small(max_nodes=400, **{**cue, name: on})
        refiner, (feats, img, boxes, roi, coarse, fine) = fit(p, 150, blank_fpn=True)
        with torch.no_grad():
            quality[on] = boundary_quality(refiner(feats, img, boxes, roi, coarse)["masks"], fine)
    unrefined = boundary_quality(F.interpolate(coarse[:, None], size=(112, 112),
                                               mode="bilinear", align_corners=False)[:, 0], fine)
    return quality[True], quality[False], unrefined


def test_balanced_detection_loss_weights_the_rare_incoherent_cells():
    from pipeline.models.transfiner.losses import detection_loss
    targets = torch.zeros(2, 28, 28, dtype=torch.bool)
    targets[:, 10, 5:9] = True                       # 8 incoherent cells of 1568
    logits = torch.zeros(2, 28, 28, requires_grad=True)
    plain = detection_loss(logits, targets, torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    balanced = detection_loss(logits, targets, torch.zeros(0), torch.zeros(0, dtype=torch.bool),
                              balanced=True)
    assert torch.isclose(plain, torch.tensor(math.log(2.0)), atol=1e-6)
    # at logit 0 every cell costs log 2; the 8 positives now count 1560 / 8 = 195 -> capped at 50
    expected = math.log(2.0) * (1560 + 8 * 50) / 1568
    assert torch.isclose(balanced, torch.tensor(expected), atol=1e-5)
    g, = torch.autograd.grad(balanced, logits)
    assert g[0, 10, 5] < 0 and abs(g[0, 10, 5]) > 40 * abs(g[0, 0, 0])


def test_sequence_encoder_in_chunks_equals_all_rois_at_once():
    from pipeline.models.transfiner.sequence import SequenceEncoder
    torch.manual_seed(0)
    enc = SequenceEncoder(16, layers=2, heads=4).eval()
    roi = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 0, 2, 3])
    tokens = torch.randn(len(roi), 16)
    with torch.no_grad():
        whole = enc(tokens, roi)
        enc.max_scores = 4 * 4 * 4          # at most one RoI of 4 nodes at a time
        chunked = enc(tokens, roi)
    assert torch.allclose(whole, chunked, atol=1e-5)
    # attention stays within a RoI: moving RoI 3's only node changes no other row
    with torch.no_grad():
        moved = enc(torch.cat([tokens[:-1], tokens[-1:] + 5]), roi)
    assert torch.allclose(moved[:-1], chunked[:-1], atol=1e-5)


def test_expected_selection_keeps_as_many_cells_as_the_detector_expects():
    """`select: expected`: per RoI, the round(sum of probabilities) most probable cells, even
    when none reaches the threshold; a RoI whose probabilities sum under 0.5 gets none."""
    probs = torch.tensor([0.35, 0.45, 0.42, 0.4, 0.1, 0.2, 0.45, 0.3])
    roi = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])     # sums 1.62, 0.3, 0.75: 2, 0, 1 cells
    keep = quadtree.expected_top(probs, roi)
    assert keep.tolist() == [False, True, True, False, False, False, True, False]
    assert not (probs >= 0.5).any()                       # the threshold keeps nothing here
    p = small(select="expected")
    refiner = TransfinerRefiner(2, p).eval()
    logits = torch.full((2, 28, 28), -3.0)
    logits[0, 5, 3:7] = -1.0                              # RoI 0 expects ~5 cells, in its order
    rois = torch.arange(2)[:, None, None].expand_as(logits)
    picked = refiner.incoherent(logits, rois)
    want = torch.sigmoid(logits).flatten(1).sum(1).round()
    assert picked.flatten(1).sum(1).tolist() == want.tolist()
    assert picked[0, 5, 3:7].all()


def test_residual_decoder_starts_as_the_coarse_mask():
    """`residual`: a node's logit is the coarse mask's logit there plus the decoder's
    correction, which starts at 0, so an untrained refiner paints each node with the coarse
    mask resized to the node's level; the paper's decoder (residual off) replaces the values."""
    feats, img, boxes, roi, coarse, fine = toy(small())
    from pipeline.models.transfiner.incoherence import incoherence_targets
    from pipeline.models.transfiner.nodes import coarse_at
    base = F.interpolate(coarse[:, None], size=(112, 112), mode="bilinear",
                         align_corners=False)[:, 0]
    changed = {}
    for residual in (True, False):
        torch.manual_seed(0)
        p = small(residual=residual)
        with torch.no_grad():
            out = TransfinerRefiner(2, p).eval()(feats, img, boxes, roi, coarse,
                                                  incoherence_targets(fine, p.sizes))
        covered = quadtree.coverage(out["nodes"], len(boxes), p.sizes) >= 0
        assert covered.any()
        coarse_there = quadtree.paint(base, out["nodes"], coarse_at(coarse, out["nodes"],
                                                                    p.sizes), p.sizes)
        changed[residual] = float((out["masks"] - coarse_there).abs()[covered].max())
    assert changed[True] < 1e-3 < changed[False]


def test_roi_colours_are_the_object_and_background_means_inside_the_box():
    from pipeline.models.transfiner.nodes import roi_colours
    image = torch.zeros(1, 3, 40, 40)
    image[0, 0, :, :20] = 1.0                      # left half red, right half blue
    image[0, 2, :, 20:] = 1.0
    box = torch.tensor([[10.0, 0.0, 30.0, 40.0]])  # straddles the two halves
    coarse = torch.zeros(1, 28, 28)
    coarse[:, :, :14] = 1.0                         # the object: the box's left half
    colours = roi_colours(image, torch.zeros(1, dtype=torch.long), box, coarse)
    assert torch.allclose(colours[0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.05)
    assert torch.allclose(colours[0, 1], torch.tensor([0.0, 0.0, 1.0]), atol=0.05)


def test_contrast_cue_places_the_edge_from_the_rois_colours():
    """FPN maps without the shape and no raw pixels: comparing each node's neighbourhood with
    its RoI's object and background colours (`contrast`) recovers the lobes the 28 x 28 mask
    lost; the same refiner without the cue does not."""
    with_cue, without, unrefined = cue_quality(contrast=True, residual=True)
    assert with_cue >= unrefined + 0.08
    assert without < unrefined + 0.03


def test_dilated_band_roots_every_cell_near_an_incoherent_one():
    cells = torch.zeros(1, 28, 28, dtype=torch.bool)
    cells[0, 10, 10] = True
    grown = quadtree.dilate(cells, 2)
    assert int(grown.sum()) == 25 and grown[0, 8:13, 8:13].all()
    p = small(dilate=1, sizes=(28, 56))
    feats, img, boxes, roi, coarse, fine = toy(p, n=1)
    from pipeline.models.transfiner.incoherence import incoherence_targets
    inc = incoherence_targets(fine, p.sizes)
    with torch.no_grad():
        out = TransfinerRefiner(2, p).eval()(feats, img, boxes, roi, coarse, inc)
    roots = out["nodes"][out["nodes"][:, 1] == 0]
    assert len(roots) == int(quadtree.dilate(inc[0], 1).sum()) > int(inc[0].sum())


def test_detected_training_nodes_are_the_inference_nodes_not_the_targets():
    """`train_nodes: detected`: the quadtree a training step refines is the one inference
    would build (the detector's), whatever the targets say; `targets` builds it from them."""
    torch.manual_seed(0)
    feats, img, boxes, roi, coarse, fine = toy(small(sizes=(28, 56)), n=1)
    from pipeline.models.transfiner.incoherence import incoherence_targets
    inc = incoherence_targets(fine, (28, 56))
    nodes = {}
    for mode in ("targets", "detected"):
        torch.manual_seed(0)
        refiner = TransfinerRefiner(2, small(sizes=(28, 56), train_nodes=mode,
                                             select="expected", dilate=1)).eval()
        with torch.no_grad():
            nodes[mode] = refiner(feats, img, boxes, roi, coarse, inc)["nodes"]
            inference = refiner(feats, img, boxes, roi, coarse)["nodes"]
        assert torch.equal(nodes[mode], inference) == (mode == "detected")
    roots = nodes["targets"][nodes["targets"][:, 1] == 0]
    assert len(roots) == int(quadtree.dilate(inc[0], 1).sum())


def test_fraction_labels_are_the_share_of_each_cell_the_mask_covers():
    from pipeline.models.transfiner.incoherence import coverage_fraction
    fine = torch.zeros(1, 56, 56, dtype=torch.bool)
    fine[0, :, :29] = True                     # the edge falls inside column 14 of the 28 grid
    share = coverage_fraction(fine, 28)
    assert share[0, 0, 13] == 1.0 and share[0, 0, 14] == 0.5 and share[0, 0, 15] == 0.0
    assert downsample(fine, 28)[0, 0, 14]      # the majority label rounds the half cell up
