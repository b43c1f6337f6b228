"""ResNet as a multi-level feature extractor (C2..C5) and self-supervised checkpoint loading.

Nothing is ever downloaded: weights come from a local file or the project's `pretrain` stage.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.errors import UserError

LEVELS = ("res2", "res3", "res4", "res5")
# frozen_bn: statistics and affine fixed at the checkpoint's (detectron2's default when
# fine-tuning, FreeSOLO and PointSup alike); bn: trained per batch; sync_bn: over all ranks
NORMS = ("frozen_bn", "bn", "sync_bn")
CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}
# ImageNet statistics: self-supervised ResNets (DenseCL, MoCo) are trained with them.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

# Prefixes that wrap torchvision names in the checkpoints people actually have:
# MoCo v2 / DenseCL training checkpoints (module.encoder_q.), mmselfsup (backbone.), DDP (module.)
_STRIP_PREFIXES = ("module.", "encoder_q.", "backbone.", "encoder.", "model.")
# Heads that belong to the pretext task, not to the backbone.
_DROP_PREFIXES = ("fc.", "encoder_k.", "queue", "neck.", "head.", "projector.", "predictor.")


class ResNetFeatures(nn.Module):
    """torchvision ResNet without pooling/fc, returning {'res2'..'res5'} feature maps."""

    def __init__(self, arch: str = "resnet18", norm: str = "bn"):
        super().__init__()
        if arch not in CHANNELS:
            raise UserError(f"backbone.arch={arch!r} is not supported; use one of {sorted(CHANNELS)}")
        norm_layer = torchvision.ops.FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
        net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer)
        self.arch = arch
        self.channels = dict(zip(LEVELS, CHANNELS[arch]))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor, up_to: str = "res5") -> "OrderedDict[str, torch.Tensor]":
        """Feature maps res2 .. `up_to` (the deeper stages are not computed)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = OrderedDict()
        for name, layer in zip(LEVELS, (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            out[name] = x
            if name == up_to:
                break
        return out


def map_checkpoint_keys(state: dict) -> tuple[dict, list[str]]:
    """Map a checkpoint's keys to torchvision ResNet names; return (mapped, dropped keys)."""
    mapped, dropped = {}, []
    for key, value in state.items():
        k = key
        changed = True
        while changed:  # prefixes can be stacked: module.encoder_q.conv1.weight
            changed = False
            for p in _STRIP_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        if "encoder_q." in key:
            # raw DenseCL/OpenSelfSup: encoder_q = Sequential(backbone, neck) -> 0.*, 1.*
            if k.startswith("1."):
                dropped.append(key)
                continue
            if k.startswith("0."):
                k = k[2:]
        if k.startswith(_DROP_PREFIXES) or key.startswith(("encoder_k.", "module.encoder_k.")):
            dropped.append(key)
            continue
        mapped[k] = value
    return mapped, dropped


def _unwrap(obj, path) -> dict:
    if isinstance(obj, dict):
        for k in ("state_dict", "model", "backbone"):
            if k in obj and isinstance(obj[k], dict):
                return _unwrap(obj[k], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise UserError(f"checkpoint {path} holds no state dict (expected a dict of tensors, "
                    f"or one under 'state_dict'/'model')")


def load_backbone_weights(model: ResNetFeatures, path) -> dict:
    """Load a torchvision / MoCo v2 / DenseCL / weakseg checkpoint into `model`, strictly.

    Missing or unexpected keys raise one UserError listing them; returns a small report.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone checkpoint not found: {path} (set backbone.weights to an "
                        f"existing file, or backbone.weights=null to run the pretrain stage first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle not allowed, ...
        raise UserError(f"cannot read backbone checkpoint {path}: {e}") from None
    mapped, dropped = map_checkpoint_keys(_unwrap(obj, path))
    # BatchNorm's num_batches_tracked is bookkeeping; older checkpoints lack it.
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    got = {k for k in mapped if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")
        raise UserError(
            f"checkpoint {path} does not fit backbone.arch={model.arch}: "
            f"missing keys [{show(missing)}], unexpected keys [{show(unexpected)}]; "
            f"check backbone.arch or the checkpoint")
    shapes = [k for k in expected if mapped[k].shape != model.state_dict()[k].shape]
    if shapes:
        raise UserError(f"checkpoint {path}: shape mismatch for {shapes[:5]}; "
                        f"check backbone.arch={model.arch}")
    model.load_state_dict(mapped, strict=False)
    return {"path": str(path), "loaded": len(expected), "dropped": len(dropped)}


def build_backbone(cfg, norm: str | None = None) -> ResNetFeatures:
    """Backbone from a `backbone` config node: arch, norm (unless given), weights (path or
    null), seed."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    norm = norm or cfg.get("norm", "bn")
    if norm not in NORMS:
        raise UserError(f"backbone.norm={norm!r} unknown; use one of {', '.join(NORMS)}")
    model = ResNetFeatures(cfg.arch, "frozen_bn" if norm == "frozen_bn" else "bn")
    if cfg.get("weights"):
        load_backbone_weights(model, cfg.weights)
    if norm == "sync_bn":
        import torch.distributed as td
        if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over all ranks
    return model


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8/float [0,255] NCHW RGB -> ImageNet-normalised float."""
    mean = torch.tensor(PIXEL_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(PIXEL_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std
