import pytest
import torch

from pipeline.models.free_mask import (FreeMaskParams, free_masks, make_queries, maskness,
                                       soft_masks, upsample_masks)


def two_region_features(h=8, w=8, c=16, seed=0):
    """Features with two clearly different regions: left 3 columns vs the rest."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    feat = b[:, None, None].repeat(1, h, w)
    feat[:, :, :3] = a[:, None, None]
    feat = feat + 0.01 * torch.randn(c, h, w, generator=g)
    region = torch.zeros(h, w, dtype=torch.bool)
    region[:, :3] = True
    return feat[None], region


def test_maskness_hand_computed():
    soft = torch.tensor([[0.9, 0.7, 0.2, 0.6]])
    binary = soft >= 0.5
    assert maskness(soft, binary).item() == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert maskness(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_queries_cover_all_scales():
    q = make_queries(torch.randn(2, 4, 8, 8), (1.0, 0.5, 0.25))
    assert q.shape == (2, 64 + 16 + 4, 4)


def test_soft_masks_are_min_max_normalised():
    soft, _ = soft_masks(torch.randn(2, 8, 6, 5), (1.0, 0.5))
    assert soft.min() >= 0 and soft.max() <= 1
    assert torch.allclose(soft.amax(-1), torch.ones(soft.shape[:2]))
    assert torch.allclose(soft.amin(-1), torch.zeros(soft.shape[:2]))


def test_recovers_regions_of_distinct_features():
    feat, region = two_region_features()
    out = free_masks(feat, FreeMaskParams(top_k=5))
    masks = out["soft"][0] >= 0.5
    valid = out["valid"][0]
    ious = [((m & region).sum() / (m | region).sum()).item() for m in masks[valid]]
    assert max(ious) > 0.99
    # and the complementary region too
    ious_bg = [((m & ~region).sum() / (m | ~region).sum()).item() for m in masks[valid]]
    assert max(ious_bg) > 0.99
    # scores are sorted and embeddings have the configured size
    s = out["score"][0][valid]
    assert torch.all(s[:-1] >= s[1:])
    assert out["embedding"].shape == (1, 5, 128)


def test_batched_equals_single_image():
    f1, _ = two_region_features(seed=1)
    f2, _ = two_region_features(seed=2)
    p = FreeMaskParams(top_k=7)
    both = free_masks(torch.cat([f1, f2]), p)
    one = free_masks(f2, p)
    for k in ("soft", "score", "maskness", "embedding", "valid"):
        assert torch.allclose(both[k][1].float(), one[k][0].float(), atol=1e-6), k


def test_upsample_crops_stride_padding_then_resizes():
    soft = torch.zeros(1, 1, 2, 2)
    soft[0, 0, :, 0] = 1.0  # left column of cells
    m = upsample_masks(soft, stride=4, input_hw=(6, 6), image_hw=(12, 12))
    assert m.shape == (1, 1, 12, 12)
    assert m[0, 0, :, :4].all() and not m[0, 0, :, 9:].any()
