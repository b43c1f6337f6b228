"""Stage `solo`: self-supervised SOLOv2 on free masks, then self-training (FreeSOLO Sec. 3.2).

Round 1 learns from the free masks with weak losses (box projection + pairwise affinity);
round r > 1 learns from round r-1's own predictions on the training images. Output:
`pseudo_labels.json` (COCO, RLE) = the last round's filtered predictions on the training
split, plus per-round predictions, metrics and overlays under `round{r}/`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from pycocotools import mask as mask_utils

from pipeline import dist
from pipeline.data.coco import (load_coco, make_coco, pycocotools_rle, save_coco,
                                 scored_at_least)
from pipeline.data.datasets import get_split
from pipeline.data.instances import InstanceBank, pad_batch
from pipeline.data.loader import BatchLoader
from pipeline.data.points import has_points, points_from_masks
from pipeline.data.strong_views import training_views
from pipeline.errors import UserError
from pipeline.models.backbone import normalize
from pipeline.models.solo import build_solo
from pipeline.models.solo_predictor import SoloPredictor
from pipeline.reporting import predict_splits, update_json
from pipeline.lifecycle import fit_or_load, weights_settings
from pipeline.provenance import (BATCHING, file_identity, fingerprint, image_identities,
                                 settings, stamp_of)
from pipeline.train import lr_schedule, precision, stage_amp, train

log = logging.getLogger(__name__)
GUARDED = True  # nothing enters the run folder before the weights' guard passes


def self_training_filter(coco: dict, st, width_of, previous: dict | None = None) -> dict:
    """Keep confident predictions as next-round targets (FreeSOLO Sec. 3.2): score
    threshold, at most `max_per_image`, boxes spanning (almost) the whole width dropped.

    With `previous` (this round's own targets) and st.keep_previous_iou > 0, a previous
    target that no kept prediction overlaps at mask IoU >= keep_previous_iou stays a target
    (CutLER Sec. 3.3 keeps MaskCut masks beside the detector's), so an object the student
    missed is not lost to the next round."""
    by = {}
    for a in sorted(coco["annotations"], key=lambda a: -a["score"]):
        if a["score"] < st.score_threshold:
            continue
        if a["bbox"][2] >= st.max_box_width_frac * width_of[a["image_id"]]:
            continue
        kept = by.setdefault(a["image_id"], [])
        if len(kept) < st.max_per_image:
            kept.append({k: v for k, v in a.items() if k != "id"})
    if previous is not None and st.get("keep_previous_iou", 0) > 0:
        old = {}
        for a in previous["annotations"]:
            if "segmentation" in a:  # point targets (solo=points) are no masks to keep
                old.setdefault(a["image_id"], []).append(a)
        for image_id, prev in old.items():
            kept = by.setdefault(image_id, [])
            if kept:
                iou = mask_utils.iou([pycocotools_rle(a["segmentation"]) for a in prev],
                                     [pycocotools_rle(a["segmentation"]) for a in kept],
                                     [0] * len(kept))
                prev = [a for a, row in zip(prev, np.atleast_2d(iou))
                        if row.max() < st.keep_previous_iou]
            kept += [{k: v for k, v in a.items() if k not in ("id", "embedding")}
                     for a in prev]
    anns = [a for im in coco["images"] for a in by.get(im["id"], [])]
    return make_coco(coco["images"], anns, coco["categories"],
                     {"description": "weakseg pseudo-labels (self-supervised SOLO)"})


def confident_targets(coco: dict, min_score: float, path, quantile=None) -> dict:
    """The free masks scoring >= min_score. Low-scoring free masks are mostly background
    pieces; as targets each one teaches the network that a piece of background is an object.
    `quantile` (solo.targets_min_quantile, in [0, 1)): the threshold is instead this quantile
    of the free masks' own scores, so it follows the data (a fixed share of them is kept)."""
    if quantile is not None:
        q = float(quantile)
        if not 0.0 <= q < 1.0:
            raise UserError(f"solo.targets_min_quantile must be in [0, 1) or null, got {q}")
        scores = [float(a.get("score", 1.0)) for a in coco["annotations"]]
        min_score = float(np.quantile(scores, q)) if scores else 0.0
        log.info("solo.targets_min_quantile=%g: round-1 threshold %.3f from the free masks' "
                 "scores", q, min_score)
    if min_score <= 0:
        return coco
    kept = scored_at_least(coco, min_score)
    if not kept["annotations"]:
        best = max(a.get("score", 1.0) for a in coco["annotations"])
        raise UserError(f"no free mask in {path} scores >= solo.targets_min_score={min_score} "
                        f"(the best scores {best:.3f}); lower the threshold")
    log.info("round-1 targets: %d of %d free masks score >= %g", len(kept["annotations"]),
             len(coco["annotations"]), min_score)
    return kept


def point_targets(targets: dict, s) -> dict:
    """`solo=points`: N points per instance (solo.points) simulated from the targets' masks
    as PointSup samples them (seeded by solo.point_seed), unless the targets carry points
    already (a points file or a Label Studio sync); the masks are not kept. Without
    solo.loss.points the targets stay as they are."""
    if not float(s.loss.get("points", 0.0)):
        return targets
    if has_points(targets):
        return targets
    n = int(s.get("points", 0) or 0)
    if n <= 0:
        raise UserError(f"solo.loss.points > 0 needs points: {s.targets} has none; set "
                        f"solo.points=<N per instance> to simulate them from its masks")
    log.info("targets: %d points per instance simulated from %s (seed %d)", n, s.targets,
             int(s.get("point_seed", 0)))
    return points_from_masks(targets, n=n, seed=int(s.get("point_seed", 0)))


def round_iterations(s, r: int) -> int:
    """Round 1 trains solo.train.max_iter iterations; a later round, which starts from the
    round before it, the fraction solo.self_training.iter_fraction of them."""
    frac = 1.0 if r == 1 else float(s.self_training.get("iter_fraction", 1.0))
    return max(1, round(s.train.max_iter * frac))


# solo.* settings that do not change a round's weights, each for a reason: what they do
# reach the fingerprint another way (targets by content, iterations and starting weights by
# value) or they act after training. Every other solo key must change the fingerprint
# (tests/stages/test_self_training.py perturbs each key of both experiments).
NOT_IN_WEIGHTS = (
    "targets", "targets_min_score",   # the targets' content is fingerprinted
    "targets_min_quantile",
    "self_training",                  # next round's targets, iterations, init: all by value
    "rounds", "train_split",          # how many rounds; the split's images are fingerprinted
    "eval_splits", "inference",       # prediction only
    "train.log_every", "train.ckpt_every", "train.cache_images", "train.workers",
)


def round_fingerprint(cfg, r: int, targets: dict, init_from: Path | None, split) -> str:
    """What a round's weights are made from: the solo settings (all but NOT_IN_WEIGHTS), the
    backbone settings, the targets' content, the training images, the backbone checkpoint
    and the weights it starts from."""
    s = cfg.solo
    return fingerprint(weights_settings(s, NOT_IN_WEIGHTS), settings(cfg.backbone), cfg.seed,
                       r, round_iterations(s, r), file_identity(cfg.backbone.get("weights")),
                       file_identity(init_from), targets["annotations"],
                       image_identities(split.image_root, split.images),
                       *precision(cfg, s.train))


def round_training(cfg, r: int, model, targets: dict, split, device):
    """(optimizer, scheduler, iterations, step) of SOLO's round r: what the stage trains with
    and what bench/solo.py times."""
    s, t = cfg.solo, cfg.solo.train
    bank = InstanceBank(split, targets, cache=t.cache_images)
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        raise UserError(f"solo.train.optimizer must be sgd or adamw, got {t.optimizer!r}")
    iters = round_iterations(s, r)
    sched = lr_schedule(opt, t.get("schedule", "cosine"), iters, t.warmup_iter)
    loss = instantiate(s.loss, embedding=s.embedding.weight if s.embedding.enabled else 0.0)
    if loss.dice and not all("segmentation" in a for a in targets["annotations"]):
        # solo=points under an experiment that sets solo.loss.dice (the CPU one: 3)
        log.warning("solo.loss.dice=%g is off: the targets carry points, no masks to compare "
                    "the masks with", loss.dice)
        loss.dice = 0.0

    paste, strong = float(t.get("copy_paste", 0.0)), bool(t.get("strong_view", False))

    rank, world = dist.rank(), dist.world_size()  # read here, not in a loader worker

    def make(it):
        samples = bank.batch(it, t.batch_size, cfg.seed + 1000 * r, t.sizes, t.max_size,
                             flip=True, rank=rank, world=world, scale_jitter=t.scale_jitter,
                             letterbox=s.letterbox)
        if paste or strong:  # FreeSOLO's views: pasted instances, strong view for the net
            samples = training_views(samples, [cfg.seed, r, it, rank], paste, strong)
        return samples
    batches = BatchLoader(make, iters, cfg.hardware.get("loader_workers", 0))

    def step(m, it):
        samples = batches(it)
        images, valid = pad_batch(samples, square=s.letterbox)
        net_in = pad_batch([dict(x, image=x["strong"]) for x in samples],
                           square=s.letterbox)[0] if strong \
            else images
        out = m(normalize(net_in.to(device)))
        # the colour-affinity loss reads the weak view: the image's own colours
        return loss(model, out, samples, images.to(device), valid.to(device), it)
    return opt, sched, iters, step


def train_round(cfg, r: int, targets: dict, round_dir: Path, init_from: Path | None, device):
    s, t = cfg.solo, cfg.solo.train
    model = build_solo(cfg, device)
    split = get_split(cfg.dataset, s.train_split)

    def fit():
        if init_from is not None:
            model.load_state_dict(torch.load(init_from, map_location=device,
                                             weights_only=True))
        opt, sched, iters, step = round_training(cfg, r, model, targets, split, device)
        return train(model, opt, step, round_dir, iters, ckpt_every=t.ckpt_every,
                     log_every=t.log_every, scheduler=sched, amp=stage_amp(cfg, t),
                     grad_clip=t.grad_clip, progress=cfg.progress, seed=int(cfg.seed),
                     desc=f"solo round {r}", ema=float(t.ema))

    fit_or_load(round_dir, round_fingerprint(cfg, r, targets, init_from, split), fit,
                save=lambda m: m.state_dict(), what=f"round {r}",
                load=lambda f: model.load_state_dict(torch.load(f, map_location=device,
                                                                weights_only=True)))
    return model


def run(cfg) -> dict:
    s = cfg.solo
    out_dir = Path(cfg.run_dir)
    device = dist.init(cfg.hardware.device)
    torch.manual_seed(cfg.seed)
    targets = load_coco(s.targets, "free-mask file (solo.targets; run stage=freemask first)")
    if not targets["annotations"]:
        raise UserError(f"{s.targets} holds no masks to learn from; check the free-mask stage "
                        f"(its filters may be too strict for this data)")
    targets = confident_targets(targets, float(s.targets_min_score), s.targets,
                                s.get("targets_min_quantile"))
    targets = point_targets(targets, s)
    results, prev = {}, None
    for r in range(1, int(s.rounds) + 1):
        round_dir = out_dir / f"round{r}"
        init = prev if (prev is not None and s.self_training.init == "previous") else None
        if r > 1 and s.embedding.enabled:
            log.warning("round %d: its targets are round %d's predictions, which carry no "
                        "embeddings, so the embedding loss is off from here on", r, r - 1)
        model = train_round(cfg, r, targets, round_dir, init, device)
        prev = round_dir / "model.pt"
        predictor = SoloPredictor(model, s, device)
        # the inference settings and the weights' own fingerprint
        key = [settings(s.inference, BATCHING), s.letterbox, stamp_of(round_dir)]

        def next_targets(split, coco, summary, r=r):
            """Round r's confident predictions on the training split: the next targets."""
            nonlocal targets
            if split.name != s.train_split:
                return
            widths = {im["id"]: im["width"] for im in coco["images"]}
            confident = any(a["score"] >= s.self_training.score_threshold
                            for a in coco["annotations"])
            targets = self_training_filter(coco, s.self_training, widths, targets)
            if dist.is_main():
                save_coco(round_dir / "pseudo_labels.json", targets)
            if not confident and r < int(s.rounds):
                raise UserError(
                    f"SOLO round {r} predicted no mask with score >= "
                    f"solo.self_training.score_threshold={s.self_training.score_threshold} "
                    f"on the training images ({summary['predictions']}); lower the threshold "
                    f"or train longer (solo.train.max_iter)")

        done = predict_splits(cfg, predictor, [s.train_split, *s.eval_splits], round_dir,
                              prefix="predictions", config_key=key,
                              shard_size=s.inference.shard_size, desc=f"solo r{r} " + "{split}",
                              title=f"SOLO round {r} " + "({split})", each=next_targets)
        results.update({f"round{r}/{k}": v for k, v in done.items()})
    final = out_dir / "pseudo_labels.json"
    if dist.is_main():  # under torchrun the other ranks hold no metrics: rank 0 alone writes
        save_coco(final, targets)  # the last round's filtered predictions
        update_json(out_dir / "metrics.json", "rounds", {k: v.get("metrics") for k, v in
                                                         results.items()})
    log.info("pseudo-labels: %d masks on %d images -> %s", len(targets["annotations"]),
             len(targets["images"]), final)
    return results
