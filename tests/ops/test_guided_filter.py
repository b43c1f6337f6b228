import torch
import torch.nn.functional as F

from pipeline.ops.guided_filter import box_mean, guided_filter


def test_blocky_mask_snaps_to_the_image_edge():
    """A disc in the image, its mask known only on a coarse 8 px grid: after bilinear
    upsampling the mask's edge is off; the guided filter moves it onto the disc's edge."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 30) ** 2 + (xx - 34) ** 2 <= 15 ** 2).float()
    image = 0.2 + 0.6 * disc
    coarse = F.avg_pool2d(disc[None, None], 8)
    soft = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)

    def iou(m):
        m = m[0, 0] >= 0.5
        return float((m & (disc > 0)).sum() / (m | (disc > 0)).sum())

    refined = guided_filter(image[None, None], soft, r=6, eps=1e-3)
    assert iou(refined) > 0.97 > iou(soft) + 0.03
    assert torch.equal(guided_filter(image[None, None], soft, r=0, eps=1e-3), soft)


def test_box_mean_is_the_mean_over_the_window_clipped_at_the_border():
    """The separable box mean against a direct average of each clipped window, on a
    non-square input and a radius past the image's edge in one axis."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 7, 12)
    for r in (1, 4, 8):
        want = torch.empty_like(x)
        for i in range(7):
            for j in range(12):
                want[..., i, j] = x[..., max(0, i - r):i + r + 1,
                                    max(0, j - r):j + r + 1].mean((-2, -1))
        assert torch.allclose(box_mean(x, r), want, atol=1e-6)


def test_masks_in_chunks_come_out_as_each_alone():
    """More masks than one chunk: each mask's result is the one it gets filtered alone."""
    torch.manual_seed(0)
    guide, src = torch.rand(2, 1, 24, 20), torch.rand(2, 37, 24, 20)
    many = guided_filter(guide, src, r=3, eps=1e-3, chunk=16)
    alone = torch.cat([guided_filter(guide, src[:, k:k + 1], r=3, eps=1e-3)
                       for k in range(37)], 1)
    assert torch.equal(many, alone)
    assert guided_filter(guide, src[:, :0], r=3, eps=1e-3).shape == (2, 0, 24, 20)
