import torch
import torch.nn.functional as F

from pipeline.ops.guided_filter import guided_filter


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
