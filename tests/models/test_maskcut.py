"""MaskCut on hand-made graphs: normalized cuts find planted blocks, one object per cut."""
import numpy as np
import torch

import pytest

from pipeline.models.maskcut import (MaskCutParams, colour_affinity, cut_graph,
                                     feature_affinity, fiedler_vector, maskcut, ncut_value)


def blocks_features(h=8, w=8, seed=0):
    """Background features plus two blocks with features of their own."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.zeros(4, h, w)
    feat[0] = 1.0
    feat[1, 1:4, 1:4] = 3.0
    feat[2, 4:7, 4:8] = 3.0
    a = torch.zeros(h, w, dtype=torch.bool)
    a[1:4, 1:4] = True
    b = torch.zeros(h, w, dtype=torch.bool)
    b[4:7, 4:8] = True
    return feat + 0.01 * torch.randn(feat.shape, generator=g), a.numpy(), b.numpy()


def test_fiedler_vector_splits_two_cliques():
    w = torch.full((10, 10), 1e-3)
    w[:4, :4] = 1.0
    w[4:, 4:] = 1.0
    x = fiedler_vector(w)
    part = x > x.mean()
    assert part[:4].all() != part[4:].any() and len(set(part[:4])) == 1 == len(set(part[4:]))
    assert ncut_value(w, torch.from_numpy(part)) < 0.01


@pytest.mark.parametrize("graph", ["zero", "remove"])
def test_two_blocks_give_two_masks(graph):
    feat, a, b = blocks_features()
    objs = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=3, graph=graph))
    masks = [m for m, _ in objs]
    assert len(masks) == 2
    assert any((m == a).all() for m in masks) and any((m == b).all() for m in masks)
    assert all(0.9 < s <= 1.0 for _, s in objs)


def test_zeroed_cells_stay_in_the_graph_linked_by_eps():
    """CutLER's loop: a found object's features are zeroed; its cells keep their place in
    the graph with eps edges to every cell (cosine 0 < tau), the other edges unchanged."""
    feat, a, _ = blocks_features()
    f = feat.flatten(1)
    p = MaskCutParams(tau=0.5)
    full = cut_graph(f, None, p, np.zeros(64, bool))
    zeroed = cut_graph(f, None, p, a.flatten())
    assert zeroed.shape == (64, 64)
    gone = torch.from_numpy(a.flatten())
    assert (zeroed[gone] == p.eps).all() and (zeroed[:, gone] == p.eps).all()
    assert torch.equal(zeroed[~gone][:, ~gone], full[~gone][:, ~gone])
    assert full[gone][:, gone].min() == 1.0      # before: block A was a clique
    # the same with features really zeroed, as the released code does it
    f0 = f.clone()
    f0[:, gone] = 0
    assert torch.equal(feature_affinity(f0, p.tau, p.eps), zeroed)


def test_zero_mode_second_cut_finds_the_other_block_not_the_first_again():
    feat, a, b = blocks_features()
    first = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=1))
    two = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=2))
    assert len(first) == 1 and len(two) == 2
    assert (two[0][0] == first[0][0]).all()
    found = {0 if (m == a).all() else 1 if (m == b).all() else -1 for m, _ in two}
    assert found == {0, 1}
    assert not (two[0][0] & two[1][0]).any()


def test_all_components_takes_both_blocks_in_one_cut():
    feat = torch.zeros(2, 8, 8)
    feat[0] = 1.0
    feat[1, 1:3, 1:3] = 3.0       # two blocks of the same kind: one cut, two components
    feat[1, 5:7, 5:7] = 3.0
    one = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=1))
    both = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=1, all_components=True))
    assert len(one) == 1 and len(both) == 2
    assert {int(m.sum()) for m, _ in both} == {4}


@pytest.mark.parametrize("graph", ["zero", "remove"])
def test_no_structure_no_objects(graph):
    """Identical features everywhere: the graph is one clique; whatever a cut splits off is
    as like its surroundings as itself (contrast 0), so nothing is an object."""
    assert maskcut(torch.ones(8, 6, 6), None, MaskCutParams(tau=0.5, max_objects=3,
                                                            graph=graph)) == []


def test_colour_term_separates_what_features_do_not():
    feat = torch.ones(4, 8, 8)               # an uninformative backbone
    lab = torch.zeros(3, 8, 8)
    lab[0] = 20.0
    lab[0, 2:5, 2:6] = 80.0                  # a bright object
    obj = np.zeros((8, 8), bool)
    obj[2:5, 2:6] = True
    assert maskcut(feat, lab, MaskCutParams(tau=0.5)) == [] or not any(
        (m == obj).all() for m, _ in maskcut(feat, lab, MaskCutParams(tau=0.5)))
    objs = maskcut(feat, lab, MaskCutParams(tau=0.5, colour_weight=1.0, position_sigma=0.5,
                                            max_area_frac=0.5))
    assert (objs[0][0] == obj).all()


def test_affinities_are_symmetric_and_bounded():
    f = torch.randn(16, 5, 5)
    w = feature_affinity(f.flatten(1), 0.1, 1e-5)
    assert torch.equal(w, w.T)
    assert (torch.isclose(w, torch.tensor(1.0)) | torch.isclose(w, torch.tensor(1e-5))).all()
    c = colour_affinity(torch.randn(3, 5, 5) * 10, 10.0, 0.1)
    assert torch.allclose(c, c.T) and c.max() <= 1.0 and torch.allclose(c.diag(), torch.ones(25))
