"""How far training moved a student's backbone from its pretrained checkpoint: per ResNet
stage, the mean over its convolutions of ||W - W0|| / ||W0||. A diagnostic for AdaMixer's
slow convergence on the sample (docs/adamixer.md): AdamW at the CPU step moves the
backbone ~10x further than Mask R-CNN's SGD does.
    .venv/bin/python bench/backbone_drift.py PRETRAINED_BACKBONE.pt RUN_DIR/model.pt [...]
"""
from __future__ import annotations

import sys

import torch

from pipeline.models.backbone import _unwrap, map_checkpoint_keys


def drift(pretrained: dict, trained: dict) -> dict:
    """{stage ('conv1', 'layer1'..'layer4'): mean relative change of its conv weights}."""
    per: dict = {}
    for key, w1 in trained.items():
        if "backbone." not in key or w1.dim() != 4:
            continue
        name = key.split("backbone.")[-1].removeprefix("body.")
        if name in pretrained:
            w0 = pretrained[name].float()
            per.setdefault(name.split(".")[0], []).append(
                ((w1.float() - w0).norm() / w0.norm()).item())
    return {k: sum(v) / len(v) for k, v in per.items()}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    base = sys.argv[1]
    pretrained, _ = map_checkpoint_keys(_unwrap(torch.load(base, map_location="cpu",
                                                           weights_only=True), base))
    for path in sys.argv[2:]:
        d = drift(pretrained, torch.load(path, map_location="cpu", weights_only=True))
        print(" ".join(f"{k} {v:.3f}" for k, v in d.items()), path)


if __name__ == "__main__":
    main()
