"""Stage `maskrcnn`: Mask R-CNN trained under one supervision level, evaluated on val.

`supervision=full` (ground-truth masks), `points` (PointSup points, simulated from ground
truth or a file with point_coords/point_labels, e.g. a Label Studio sync), `free_masks`
or `solo` (pseudo-masks as if they were masks). Writes `model.pt`, `predictions_val.json`,
`metrics.json` (class-agnostic and, where classes exist, class-aware AP).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import dist
from pipeline.data.coco import load_coco, mask_to_annotation, save_coco
from pipeline.data.datasets import get_split
from pipeline.data.instances import InstanceBank
from pipeline.data.points import points_from_masks
from pipeline.data.transforms import same_size_batches, to_tensor
from pipeline.errors import UserError
from pipeline.eval.coco_eval import evaluate, format_table
from pipeline.io import save_torch
from pipeline.models.backbone import build_backbone
from pipeline.models.maskrcnn import build_maskrcnn
from pipeline.provenance import (BATCHING, ENGINEERING, file_identity, fingerprint,
                                 guard, image_identities, settings, stamp_of)
from pipeline.reporting import finish_split, update_json
from pipeline.sharded import run_sharded
from pipeline.train import lr_schedule, train

log = logging.getLogger(__name__)


def training_targets(cfg, split) -> tuple[dict, bool]:
    """The COCO dict to train on, and whether it is class-agnostic."""
    sv = cfg.supervision
    if sv.annotations:
        data = load_coco(sv.annotations, f"supervision={sv.name} annotations")
    elif not split.has_gt:
        raise UserError(f"supervision={sv.name} needs ground truth in split {split.name!r} or "
                        f"supervision.annotations=<COCO file>")
    else:
        data = split.coco
    if sv.mask_loss == "points" and data["annotations"] and \
            "point_coords" not in data["annotations"][0]:
        data = points_from_masks(data, n=int(sv.points), seed=int(sv.point_seed))
        save_coco(Path(cfg.run_dir) / f"points_{split.name}.json", data)  # what we trained on
    return data, bool(sv.agnostic)


def weights_fingerprint(cfg, split, targets) -> str:
    """What the trained weights are made from: model and training settings, the supervision
    (its settings and the targets' content: masks or points), the training images, the
    backbone checkpoint. Inference settings are not part of it."""
    mc = cfg.maskrcnn
    model = {k: v for k, v in settings(mc).items() if k not in ("inference", "eval_splits")}
    return fingerprint(model, settings(cfg.supervision, ENGINEERING + ("annotations",)),
                       settings(cfg.backbone), cfg.seed,
                       file_identity(cfg.backbone.get("weights")),
                       targets["annotations"],
                       image_identities(split.image_root, split.images))


class MaskRCNNPredictor:
    def __init__(self, model, cfg, device, label_to_cat):
        self.model, self.cfg, self.device = model.eval(), cfg, device
        self.label_to_cat = label_to_cat

    @torch.no_grad()
    def __call__(self, items):
        c = self.cfg.maskrcnn.inference
        results = {}
        for shape, group in same_size_batches(items, c.batch_size, c.short_side, c.max_size):
            outs = self.model([to_tensor(a, shape).to(self.device) / 255.0 for _, a in group])
            for (info, arr), o in zip(group, outs):
                h, w = arr.shape[:2]
                masks = o["masks"]
                if len(masks) and tuple(shape) != (h, w):
                    masks = F.interpolate(masks, size=(h, w), mode="bilinear",
                                          align_corners=False)
                masks = (masks[:, 0] >= c.mask_threshold).cpu().numpy()
                # box AP scores the detector's boxes, not the extents of its masks
                sx, sy = w / shape[1], h / shape[0]
                boxes = (o["boxes"].cpu() * torch.tensor([sx, sy, sx, sy])).tolist()
                results[info["id"]] = [
                    dict(mask_to_annotation(m, info["id"], self.label_to_cat[int(lab)],
                                            score=round(float(s), 5)),
                         bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)])
                    for m, s, lab, (x0, y0, x1, y1) in zip(masks, o["scores"].tolist(),
                                                           o["labels"].tolist(), boxes)
                    if m.any()]
        return [results[info["id"]] for info, _ in items]


def run(cfg) -> dict:
    mc, sv = cfg.maskrcnn, cfg.supervision
    out_dir = Path(cfg.run_dir)
    device = dist.init(cfg.hardware.device)
    torch.manual_seed(cfg.seed)
    split = get_split(cfg.dataset, mc.train_split)
    targets, agnostic = training_targets(cfg, split)
    cats = sorted(c["id"] for c in targets["categories"])
    if agnostic:
        cat_map, label_to_cat = {c: 0 for c in cats}, {1: 1}
    else:
        cat_map = {c: i for i, c in enumerate(cats)}
        label_to_cat = {i + 1: c for i, c in enumerate(cats)}
    num_classes = 1 if agnostic else len(cats)
    model = build_maskrcnn(
        build_backbone(cfg.backbone), num_classes, supervision=sv.mask_loss,
        fpn_channels=mc.fpn_channels,
        mask_head_channels=mc.mask_head_channels, box_head_dim=mc.box_head_dim,
        box_batch_size_per_image=mc.rois_per_image,
        rpn_anchor_generator=_anchors(mc.anchor_sizes),
        box_detections_per_img=mc.inference.max_per_image,
        box_score_thresh=mc.inference.score_threshold).to(device)
    final = out_dir / "model.pt"
    if dist.is_main():
        guard(out_dir, weights_fingerprint(cfg, split, targets))
    if final.is_file():
        model.load_state_dict(torch.load(final, map_location=device, weights_only=True))
        log.info("already trained: %s", final)
    else:
        bank = InstanceBank(split, targets, category_map=cat_map, cache=mc.train.cache_images)
        t = mc.train
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=t.lr,
                              momentum=0.9, weight_decay=t.weight_decay)
        sched = lr_schedule(opt, t.get("schedule", "cosine"), t.max_iter, t.warmup_iter)

        def step(m, it):
            samples = bank.batch(it, t.batch_size, cfg.seed, t.sizes, t.max_size, flip=True,
                                 rank=dist.rank(), world=dist.world_size(),
                                 sample_points=int(sv.get("sample_points", 0)))
            images = [s["image"].to(device) / 255.0 for s in samples]
            tg = []
            for s in samples:
                d = {"boxes": s["boxes"].to(device), "labels": (s["labels"] + 1).to(device)}
                if sv.mask_loss == "full":
                    d["masks"] = s["masks"].to(device, torch.uint8)
                else:
                    d["points"] = s["points"].to(device)
                    d["point_labels"] = s["point_labels"].to(device)
                tg.append(d)
            losses = m(images, tg)
            losses["loss"] = sum(losses.values())
            return losses

        train(model, opt, step, out_dir, t.max_iter, ckpt_every=t.ckpt_every,
              log_every=t.log_every, scheduler=sched, amp=cfg.hardware.amp,
              grad_clip=t.grad_clip, progress=cfg.progress, seed=int(cfg.seed),
              desc=f"maskrcnn {sv.name}")
        if dist.is_main():
            save_torch(final, model.state_dict())
    summaries = {}
    for split_name in mc.eval_splits:
        summaries[split_name] = evaluate_split(cfg, get_split(cfg.dataset, split_name), model,
                                               device, label_to_cat, targets, agnostic)
    return summaries


def evaluate_split(cfg, split, model, device, label_to_cat, targets, agnostic) -> dict:
    mc, sv, out_dir = cfg.maskrcnn, cfg.supervision, Path(cfg.run_dir)
    out_json = out_dir / f"predictions_{split.name}.json"
    coco, skipped = run_sharded(split, MaskRCNNPredictor(model, cfg, device, label_to_cat),
                                out_json, out_dir / "shards" / split.name,
                                config_key=[settings(mc.inference, BATCHING), stamp_of(out_dir)],
                                shard_size=mc.inference.shard_size, workers=cfg.hardware.workers,
                                strict=cfg.strict, progress=cfg.progress,
                                desc=f"maskrcnn {sv.name} {split.name}",
                                categories=targets["categories"])
    summary = finish_split(cfg, split, coco, skipped, out_dir, out_json,
                           f"Mask R-CNN, {sv.name} ({split.name}, class-agnostic)")
    if not agnostic and split.has_gt:
        ids = [im["id"] for im in coco["images"]]
        aware = evaluate(split.coco, coco["annotations"], agnostic=False, image_ids=ids)
        print(format_table({f"Mask R-CNN, {sv.name} (class-aware)": aware}))
        summary["metrics_class_aware"] = aware
        update_json(out_dir / "metrics.json", split.name, summary)
    return summary


def _anchors(sizes):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    sizes = tuple((int(s),) for s in sizes)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
