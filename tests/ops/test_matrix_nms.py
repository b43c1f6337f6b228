import pytest
import torch

from pipeline.ops.matrix_nms import mask_iou_matrix, matrix_nms


def matrix_nms_reference(masks, scores, kernel="gaussian", sigma=2.0):
    """Loop version for one image, written from the definition (SOLOv2 Sec. 3.3)."""
    n = masks.shape[0]
    m = masks.float()
    iou = torch.zeros(n, n)
    for i in range(n):
        for j in range(i + 1, n):
            inter = (m[i] * m[j]).sum()
            union = m[i].sum() + m[j].sum() - inter
            iou[i, j] = inter / max(float(union), 1e-6)
    out = scores.clone().float()
    for j in range(n):
        d = 1.0
        for i in range(j):
            comp_i = max([float(iou[k, i]) for k in range(i)], default=0.0)
            if kernel == "gaussian":
                f = float(torch.exp(torch.tensor(-sigma * (float(iou[i, j]) ** 2 - comp_i ** 2))))
            else:
                f = (1 - float(iou[i, j])) / max(1 - comp_i, 1e-6)
            d = min(d, f)
        out[j] = scores[j] * d
    return out



def random_masks(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, p, generator=g) > 0.5
    # make some masks near-duplicates of earlier ones so that decay matters
    for i in range(1, n, 3):
        flip = torch.rand(p, generator=g) < 0.1
        base[i] = base[i - 1] ^ flip
    scores = torch.rand(n, generator=g).sort(descending=True).values
    return base, scores


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(kernel, seed):
    masks, scores = random_masks(12, 50, seed)
    got = matrix_nms(masks, scores, kernel=kernel, sigma=2.0)
    want = matrix_nms_reference(masks, scores, kernel=kernel, sigma=2.0)
    assert torch.allclose(got, want, atol=1e-5)


def test_batched_equals_per_image():
    a, sa = random_masks(10, 40, 3)
    b, sb = random_masks(10, 40, 4)
    batched = matrix_nms(torch.stack([a, b]), torch.stack([sa, sb]))
    assert torch.allclose(batched[0], matrix_nms(a, sa))
    assert torch.allclose(batched[1], matrix_nms(b, sb))


def test_duplicate_is_suppressed_and_disjoint_is_kept():
    m = torch.zeros(3, 16, dtype=torch.bool)
    m[0, :8] = True
    m[1, :8] = True      # exact duplicate of the top mask
    m[2, 8:] = True      # disjoint
    scores = torch.tensor([0.9, 0.8, 0.7])
    out = matrix_nms(m, scores, sigma=2.0)
    assert out[0] == pytest.approx(0.9)
    assert out[1] == pytest.approx(0.8 * torch.exp(torch.tensor(-2.0)).item(), rel=1e-5)
    assert out[2] == pytest.approx(0.7)


def test_labels_keep_other_classes():
    m = torch.ones(2, 8, dtype=torch.bool)
    out = matrix_nms(m, torch.tensor([0.9, 0.8]), labels=torch.tensor([0, 1]))
    assert out[1] == pytest.approx(0.8)


def test_iou_matrix():
    m = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)[None]
    iou = mask_iou_matrix(m)[0]
    assert iou[0, 1] == pytest.approx(1 / 3)
    assert iou[0, 0] == pytest.approx(1.0)
