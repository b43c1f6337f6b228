"""A mask head on AdaMixer's final boxes (not part of the paper, which detects boxes only).

Each box reads a RoIAlign window from the one level of the 3D feature space that its z
selects: the level whose stride makes the box about `roi_size` cells wide (z_j nearest to
z - log2(roi_size); a 224 px box at 14 cells lands on stride 16, Mask R-CNN's FPN rule). A
small FCN (3x3 convolutions, a 2x deconvolution, one mask per class) gives 28 x 28 logits.
Supervision: full masks (per-pixel BCE, torchvision's Mask R-CNN mask loss) or PointSup's
point loss (`pipeline.models.maskrcnn.point_loss`), both from the supervision object (`roi_mask_loss`). Trained on the final stage's matched
boxes and on the annotated boxes (as Mask R-CNN adds the ground-truth boxes to its
proposals), so the head learns shapes while the detector's boxes are still poor.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import roi_align

from pipeline.models.adamixer.boxes import xyxy_to_xyzr


def select_levels(boxes: torch.Tensor, strides, roi_size: int) -> torch.Tensor:
    """(K, 4) xyxy -> (K,) index of the level each box is read from."""
    z = xyxy_to_xyzr(boxes)[:, 2]
    level_z = torch.tensor([math.log2(s) for s in strides], device=boxes.device)
    return (z[:, None] - math.log2(roi_size) - level_z).abs().argmin(1)


def roi_features(levels: list[torch.Tensor], strides, boxes: list[torch.Tensor],
                 roi_size: int) -> torch.Tensor:
    """[(B, D, H_j, W_j)], per image (K_i, 4) xyxy boxes -> (sum K_i, D, roi, roi)."""
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    out = levels[0].new_zeros(len(rois), levels[0].shape[1], roi_size, roi_size)
    if not len(rois):
        return out
    which = select_levels(rois[:, 1:], strides, roi_size)
    for j, (feat, s) in enumerate(zip(levels, strides)):
        idx = torch.where(which == j)[0]
        if len(idx):
            # float32 boxes (not rounded to the features' bfloat16 under autocast)
            out[idx] = roi_align(feat.to(rois.dtype), rois[idx], roi_size, 1.0 / s,
                                 sampling_ratio=2, aligned=True).to(out.dtype)
    return out


class MaskHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, channels: int = 256, convs: int = 4,
                 roi_size: int = 14):
        super().__init__()
        self.roi_size = roi_size
        layers = []
        for i in range(convs):
            layers += [nn.Conv2d(in_dim if i == 0 else channels, channels, 3, padding=1),
                       nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.predict = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, levels, strides, boxes: list[torch.Tensor]) -> torch.Tensor:
        """-> (sum K_i, num_classes, 2 roi, 2 roi) mask logits."""
        x = self.convs(roi_features(levels, strides, boxes, self.roi_size))
        return self.predict(F.relu(self.up(x)))


def paste(logits: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, shape
          ) -> torch.Tensor:
    """(K, C, M, M) logits, (K,) labels, (K, 4) boxes -> (K, 1, h, w) probabilities."""
    if not len(logits):
        return logits.new_zeros(0, 1, *shape)
    prob = logits[torch.arange(len(labels), device=logits.device), labels].sigmoid()[:, None]
    return paste_masks_in_image(prob.float(), boxes.float(), tuple(shape), padding=1)
