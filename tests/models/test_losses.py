import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.losses import (colour_similarity, dice_loss, embedding_loss, neighbours,
                                    pairwise_affinity_loss, projection_dice_loss, rgb_to_lab)


def square(h=12, w=12, y=(3, 8), x=(2, 9)):
    m = torch.zeros(1, h, w)
    m[0, y[0]:y[1], x[0]:x[1]] = 1
    return m


def test_dice_perfect_and_inverted():
    t = square()
    assert dice_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    assert dice_loss(1 - t, t).item() == pytest.approx(1.0, abs=1e-5)


def test_projection_dice_depends_on_box_not_shape():
    t = square()
    diamond = torch.zeros_like(t)  # touches every row and column of the box, but is no box
    for r in range(3, 8):
        diamond[0, r, 2 + (r - 3):9 - (r - 3) if 9 - (r - 3) > 2 + (r - 3) else 3 + (r - 3)] = 1
    diamond[0, 5, 2:9] = 1
    assert projection_dice_loss(t, t, "max").item() == pytest.approx(0.0, abs=1e-5)
    assert projection_dice_loss(diamond, t, "max").item() == pytest.approx(0.0, abs=1e-5)
    assert projection_dice_loss(diamond, t, "mean").item() > 0.01   # mean sees the shape
    far = square(y=(0, 2), x=(10, 12))
    assert projection_dice_loss(far, t, "max").item() == pytest.approx(2.0, abs=1e-4)


def test_pairwise_uniform_colour():
    h = w = 10
    lab = rgb_to_lab(torch.full((1, 3, h, w), 120.0))
    sim = colour_similarity(lab)                                     # all 1
    region = torch.ones(1, h, w, dtype=torch.bool)
    agree = torch.full((1, h, w), 8.0)                               # confident, one label
    assert pairwise_affinity_loss(agree, sim, region).item() < 1e-3
    checker = (torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 * 16.0 - 8.0
    # dilation 2 compares same-parity pixels: a checkerboard agrees with its dilated
    # neighbours, so use stripes of width 2 instead, which disagree with them
    stripes = ((torch.arange(w) // 2) % 2 * 16.0 - 8.0).expand(h, w)[None]
    loss = pairwise_affinity_loss(stripes, sim, region).item()
    assert loss > 3.0                      # most edges join opposite confident labels
    assert pairwise_affinity_loss(checker[None], sim, region).item() < 1e-3


def test_pairwise_ignores_colour_edges():
    h = w = 10
    rgb = torch.zeros(1, 3, h, w)
    rgb[:, :, :, 5:] = 255.0                                         # black | white
    sim = colour_similarity(rgb_to_lab(rgb))
    region = torch.ones(1, h, w, dtype=torch.bool)
    split = torch.where(torch.arange(w) < 5, 8.0, -8.0).expand(h, w)[None]
    assert pairwise_affinity_loss(split, sim, region).item() < 1e-3  # label edge = colour edge


def test_pairwise_value_hand_computed():
    # two pixels 2 apart (dilation 2), same colour, probabilities 0.5 and 0.5: -log(0.5)
    logits = torch.zeros(1, 1, 3)
    sim = colour_similarity(rgb_to_lab(torch.full((1, 3, 1, 3), 50.0)))
    region = torch.ones(1, 1, 3, dtype=torch.bool)
    assert pairwise_affinity_loss(logits, sim, region).item() == pytest.approx(math.log(2),
                                                                              rel=1e-5)


def test_neighbours_shape_and_values():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    n = neighbours(x, 3, 2)
    assert n.shape == (1, 1, 8, 5, 5)
    assert n[0, 0, :, 2, 2].tolist() == [0, 2, 4, 10, 14, 20, 22, 24]


def test_lab_of_white_and_black():
    lab = rgb_to_lab(torch.tensor([[[[255.0]], [[255.0]], [[255.0]]]]))
    assert lab[0, 0].item() == pytest.approx(100, abs=0.1)
    assert rgb_to_lab(torch.zeros(1, 3, 1, 1))[0, 0].item() == pytest.approx(0, abs=0.1)


def test_embedding_loss():
    a = torch.tensor([[1.0, 0.0]])
    assert embedding_loss(a, a).item() == pytest.approx(0.0)
    assert embedding_loss(a, -a).item() == pytest.approx(2.0)


def test_pairwise_edges_crossing_the_box_border_count_with_centre_in_box():
    """BoxInst: an edge counts when its centre pixel lies in the box; its neighbour may lie
    outside. A mask that stops short of a same-colour region just outside the box is then
    penalised; with both ends required inside, those edges vanish."""
    h = w = 12
    sim = colour_similarity(rgb_to_lab(torch.zeros(1, 3, h, w)))      # one colour everywhere
    region = torch.zeros(1, h, w, dtype=torch.bool)
    region[0, 2:10, 2:10] = True                                       # the box
    logits = torch.full((1, h, w), -8.0)
    logits[0, 2:10, 2:10] = 8.0                                        # object = box exactly
    inside_only = pairwise_affinity_loss(logits, sim, region).item()
    crossing = pairwise_affinity_loss(logits, sim, region,
                                      neighbour_ok=torch.ones(1, h, w, dtype=torch.bool)).item()
    assert inside_only < 1e-3 and crossing > 1.0


def test_pairwise_loss_equals_its_definition_on_random_inputs():
    # the definition, written out with unfolded neighbours and log-probabilities: the loss
    # (one offset at a time, softplus identity) and its gradient must match it
    torch.manual_seed(0)
    n, h, w = 5, 13, 11
    logits = (torch.randn(n, h, w) * 4).requires_grad_()
    sim = torch.rand(n, 8, h, w)
    region = torch.rand(n, h, w) > 0.4
    ok = torch.rand(n, h, w) > 0.2
    for neighbour_ok in (None, ok):
        lf, lb = F.logsigmoid(logits), F.logsigmoid(-logits)
        log_same = torch.logaddexp(lf[:, None] + neighbours(lf[:, None], 3, 2)[:, 0],
                                   lb[:, None] + neighbours(lb[:, None], 3, 2)[:, 0])
        other = region if neighbour_ok is None else neighbour_ok
        edges = ((sim >= 0.3) & region[:, None]
                 & neighbours(other[:, None].float(), 3, 2)[:, 0].bool()).float()
        want = -(log_same * edges).flatten(1).sum(1) / edges.flatten(1).sum(1).clamp(min=1)
        got = pairwise_affinity_loss(logits, sim, region, 0.3, 3, 2, neighbour_ok)
        assert torch.allclose(got, want, atol=1e-5)
        g_want, = torch.autograd.grad(want.sum(), logits)
        g_got, = torch.autograd.grad(got.sum(), logits)
        assert torch.allclose(g_got, g_want, atol=1e-5)
