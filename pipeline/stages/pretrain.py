"""Stage `pretrain`: a self-supervised backbone (DenseCL) from the dataset's own images.

Writes `backbone.pt` (a plain torchvision ResNet state dict under 'state_dict') that the
free-mask and training stages load through `backbone.weights`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import dist
from pipeline.data.augment import ImageBank, moco_v2_augment
from pipeline.data.batch_augment import crop_views, photometric, photometric_params
from pipeline.data.datasets import get_split
from pipeline.data.loader import BatchLoader
from pipeline.models.backbone import ResNetFeatures, load_backbone_weights, normalize
from pipeline.models.densecl import DenseCL
from pipeline.lifecycle import fit_or_load, weights_settings
from pipeline.provenance import file_identity, fingerprint, image_identities
from pipeline.train import lr_schedule, precision, stage_amp, train

log = logging.getLogger(__name__)
GUARDED = True  # nothing enters the run folder before the weights' guard passes


# pretrain.* settings that do not change the backbone: the init weights enter by content
NOT_IN_WEIGHTS = ("init_weights",)


def backbone_fingerprint(cfg, split) -> str:
    """The architecture only of cfg.backbone: pretraining builds its own BN encoder whatever
    backbone.norm (a fine-tuning setting) says, and backbone.weights names this stage's own
    output."""
    p = cfg.pretrain
    return fingerprint(weights_settings(p, NOT_IN_WEIGHTS), cfg.backbone.arch, cfg.seed,
                       file_identity(p.get("init_weights")),
                       image_identities(split.image_root, split.images), *precision(cfg, p))


def build_model(cfg, device) -> DenseCL:
    p = cfg.pretrain
    backbone = ResNetFeatures(cfg.backbone.arch)
    if p.get("init_weights"):
        load_backbone_weights(backbone, p.init_weights)
    return DenseCL(backbone, dim=p.dim, hidden=p.hidden, queue_size=p.queue_size,
                   momentum=p.momentum, temperature=p.temperature,
                   dense_weight=p.dense_weight,
                   shuffle_groups=int(p.get("shuffle_groups", 1)),
                   dense_queue=p.get("dense_queue", "pooled_projection"),
                   key_bn=p.get("key_bn", "own")).to(device)


def training(cfg, model, split, device):
    """(optimizer, scheduler, step) of DenseCL pretraining: what the stage trains with and
    what bench/pretrain.py times."""
    p = cfg.pretrain
    on_batch = p.get("augment", "batch") == "batch"
    bank = ImageBank(split, cache=p.cache_images,
                     max_side=p.max_side, workers=cfg.hardware.workers)
    augment = moco_v2_augment(p.crop_size, p.crop_scale)
    lr = p.base_lr * p.batch_size * dist.world_size() / 256  # linear scaling rule
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=lr,
                          momentum=0.9, weight_decay=p.weight_decay)
    sched = lr_schedule(opt, "cosine", p.max_iter, p.warmup_iter)

    rank, world = dist.rank(), dist.world_size()  # read here, not in a loader worker

    def make(it):
        # augmentation randomness comes from (seed, iteration, rank): a resumed run is identical
        seed = int(np.random.SeedSequence([cfg.seed, it, rank, 1]).generate_state(1)[0])
        imgs = bank.get(bank.batch_indices(it, p.batch_size, cfg.seed, rank, world))
        if on_batch:  # crops here (a loader worker), colours on the device in step()
            g = torch.Generator().manual_seed(seed)
            return [(crop_views(imgs, p.crop_size, p.crop_scale, g),
                     photometric_params(len(imgs), g)) for _ in range(2)]
        torch.manual_seed(seed)
        return [torch.stack([augment(t) for t in imgs]) for _ in range(2)]
    batches = BatchLoader(make, p.max_iter, cfg.hardware.get("loader_workers", 0))

    def view(v):
        if not on_batch:
            return normalize(v.to(device))
        crops, params = v
        return normalize(photometric(crops.to(device, non_blocking=True).float() / 255, params)
                         * 255)

    def step(m, it):
        v1, v2 = batches(it)
        return m(view(v1), view(v2))
    return opt, sched, step


def run(cfg) -> dict:
    p = cfg.pretrain
    out_dir = Path(cfg.run_dir)
    split = get_split(cfg.dataset, p.split)
    if p.get("overwrite", False):
        for f in (out_dir / "backbone.pt", out_dir / "last.pt"):
            f.unlink(missing_ok=True)

    def fit():
        device = dist.init(cfg.hardware.device)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, device)
        opt, sched, step = training(cfg, model, split, device)
        return train(model, opt, step, out_dir, p.max_iter, ckpt_every=p.ckpt_every,
                     log_every=p.log_every, scheduler=sched, amp=stage_amp(cfg, p),
                     progress=cfg.progress, desc="pretrain", seed=int(cfg.seed))

    def save(model):
        return {"state_dict": model.backbone_q.state_dict(), "arch": cfg.backbone.arch,
                "method": "densecl", "iterations": int(p.max_iter)}

    fit_or_load(out_dir, backbone_fingerprint(cfg, split), fit, save=save, file="backbone.pt",
                what="a backbone")
    return {"backbone": str(out_dir / "backbone.pt")}
