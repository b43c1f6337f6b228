"""MaskCut on hand-made graphs: normalized cuts find planted blocks, one object per cut."""
import numpy as np
import torch

from pipeline.models.maskcut import (MaskCutParams, colour_affinity, feature_affinity,
                                     fiedler_vector, maskcut, ncut_value)


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


def test_two_blocks_give_two_masks():
    feat, a, b = blocks_features()
    objs = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=3))
    masks = [m for m, _ in objs]
    assert len(masks) == 2
    assert any((m == a).all() for m in masks) and any((m == b).all() for m in masks)
    assert all(0.9 < s <= 1.0 for _, s in objs)


def test_all_components_takes_both_blocks_in_one_cut():
    feat = torch.zeros(2, 8, 8)
    feat[0] = 1.0
    feat[1, 1:3, 1:3] = 3.0       # two blocks of the same kind: one cut, two components
    feat[1, 5:7, 5:7] = 3.0
    one = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=1))
    both = maskcut(feat, None, MaskCutParams(tau=0.5, max_objects=1, all_components=True))
    assert len(one) == 1 and len(both) == 2
    assert {int(m.sum()) for m, _ in both} == {4}


def test_no_structure_no_objects():
    """Identical features everywhere: the graph is one clique, no cut is an object."""
    objs = maskcut(torch.ones(8, 6, 6), None, MaskCutParams(tau=0.5, max_objects=3))
    assert all(m.sum() <= 0.5 * 36 for m, _ in objs)


def test_colour_term_separates_what_features_do_not():
    feat = torch.ones(4, 8, 8)               # an uninformative backbone
    lab = torch.zeros(3, 8, 8)
    lab[0] = 20.0
    lab[0, 2:5, 2:6] = 80.0                  # a bright object
    obj = np.zeros((8, 8), bool)
    obj[2:5, 2:6] = True
    assert maskcut(feat, lab, MaskCutParams(tau=0.5)) == [] or not any(
        (m == obj).all() for m, _ in maskcut(feat, lab, MaskCutParams(tau=0.5)))
    objs = maskcut(feat, lab, MaskCutParams(tau=0.5, colour_weight=1.0, position_sigma=0.5))
    assert (objs[0][0] == obj).all()


def test_affinities_are_symmetric_and_bounded():
    f = torch.randn(16, 5, 5)
    w = feature_affinity(f.flatten(1), 0.1, 1e-5)
    assert torch.equal(w, w.T)
    assert (torch.isclose(w, torch.tensor(1.0)) | torch.isclose(w, torch.tensor(1e-5))).all()
    c = colour_affinity(torch.randn(3, 5, 5) * 10, 10.0, 0.1)
    assert torch.allclose(c, c.T) and c.max() <= 1.0 and torch.allclose(c.diag(), torch.ones(25))
