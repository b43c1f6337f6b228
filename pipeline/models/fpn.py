"""ResNet + FPN, the feature pyramid both SOLO and Mask R-CNN sit on."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from pipeline.models.backbone import LEVELS, ResNetFeatures

# FPN level names in the output dict: p2..p5 from res2..res5, p6 by max-pooling p5
NAMES = ("p2", "p3", "p4", "p5", "p6")


class BackboneFPN(nn.Module):
    def __init__(self, backbone: ResNetFeatures, out_channels: int = 256):
        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork([backbone.channels[k] for k in LEVELS], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels  # torchvision's detection models read this

    def forward(self, x) -> "OrderedDict":
        feats = self.fpn(self.body(x))
        return OrderedDict(zip(NAMES, feats.values()))
