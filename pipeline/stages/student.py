"""Stage `student`: the model a user deploys after labelling, trained under one supervision
level and evaluated on each eval split. `stage=maskrcnn` is this stage with model=maskrcnn.

`model=maskrcnn` (torchvision's Mask R-CNN with PointSup's point loss), `sparseinst`
(SparseInst: no boxes, no NMS) or `adamixer` (AdaMixer's query-based boxes + a mask head). `supervision=full` (ground-truth masks), `points` (PointSup
points, simulated from ground truth or a file with point_coords/point_labels, e.g. a Label
Studio sync), `free_masks` or `solo` (pseudo-masks as if they were masks). Writes
`model.pt`, `predictions_{split}.json`, `metrics.json` (class-agnostic and, where classes
exist, class-aware AP; inference images/s on this machine).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline import dist
from pipeline.data.coco import save_coco
from pipeline.data.datasets import get_split
from pipeline.data.instances import InstanceBank
from pipeline.data.loader import BatchLoader
from pipeline.errors import UserError
from pipeline.eval.coco_eval import evaluate, format_table
from pipeline.models.students import MODELS, StudentPredictor, build_student, inference_speed
from pipeline.lifecycle import fit_or_load, weights_settings
from pipeline.provenance import (BATCHING, ENGINEERING, file_identity, fingerprint,
                                 image_identities, settings, stamp_of)
from pipeline.reporting import predict_splits, update_json
from pipeline.supervision import build_supervision
from pipeline.train import lr_schedule, precision, stage_amp, train

log = logging.getLogger(__name__)
GUARDED = True  # nothing enters the run folder before the weights' guard passes


def training_targets(cfg, split, supervision=None) -> tuple[dict, bool]:
    """The COCO dict to train on (the supervision object's, built from cfg.supervision unless
    given: pipeline/supervision.py), and whether it is class-agnostic."""
    supervision = supervision or build_supervision(cfg.supervision)
    return supervision.training_coco(split), bool(cfg.supervision.agnostic)


def label_maps(targets, agnostic) -> tuple[dict, dict, int]:
    """(category id -> training label - 1, predicted label -> category id, class count)."""
    cats = sorted(c["id"] for c in targets["categories"])
    if agnostic:
        return {c: 0 for c in cats}, {1: 1}, 1
    return ({c: i for i, c in enumerate(cats)}, {i + 1: c for i, c in enumerate(cats)},
            len(cats))


def model_name(cfg) -> str:
    name = str(cfg.get("model", "maskrcnn"))
    if name not in MODELS:
        raise UserError(f"model={name!r} is not a student model; choose one of "
                        f"{', '.join(MODELS)}")
    if cfg.stage == "maskrcnn" and name != "maskrcnn":
        raise UserError(f"stage=maskrcnn trains Mask R-CNN; for model={name} use stage=student")
    return name


def load_init(model, path, device) -> None:
    """Start from a whole trained model of the same kind (its model.pt). Tensors whose shape
    differs (the class-specific predictors, when the class count changes) keep their fresh
    initialisation, as detectron2 does when fine-tuning to other classes."""
    if not Path(path).is_file():
        raise UserError(f"train.init: {path} not found (a finished run's model.pt)")
    state, own = torch.load(path, map_location=device, weights_only=True), model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fits) < len(own) // 2:
        raise UserError(f"train.init: {path} is not a checkpoint of this model ({len(fits)} of "
                        f"{len(own)} tensors fit)")
    skipped = sorted(set(own) - set(fits))
    if skipped:
        log.warning("train.init: %d tensor(s) of another shape or missing, left as initialised: "
                    "%s", len(skipped), ", ".join(skipped))
    model.load_state_dict(fits, strict=False)


# <model>.* settings that do not change a student's weights: prediction only, and the init
# checkpoint, which enters by its content
NOT_IN_WEIGHTS = ("inference", "eval_splits", "train.init")
# Mask R-CNN's refiner settings that act at prediction only (the quadtree at inference)
REFINER_INFERENCE = ("transfiner.threshold", "transfiner.select", "transfiner.min_score")


def not_in_weights(node) -> tuple[str, ...]:
    """NOT_IN_WEIGHTS of one model's node: without the refiner (`refine: none`) none of its
    settings makes the weights; with it, its prediction-only ones do not."""
    if "transfiner" not in node:
        return NOT_IN_WEIGHTS
    return NOT_IN_WEIGHTS + (REFINER_INFERENCE if refiner_on(node) else ("transfiner",))


def refiner_on(node) -> bool:
    return "transfiner" in node and str(node.get("refine", "none")) != "none"


def prediction_settings(node) -> list:
    """What a student's predictions are made from besides its weights: its `inference`
    settings and, with the refiner on, the refiner's prediction-only ones."""
    made = [settings(node.inference, BATCHING)]
    if refiner_on(node):
        made.append({k: node.transfiner.get(k.split(".")[-1]) for k in REFINER_INFERENCE})
    return made


def weights_fingerprint(cfg, split, targets) -> str:
    """What the trained weights are made from: the model node's settings (all but
    not_in_weights), the supervision (its settings and the targets' content: masks or
    points), the training images, the backbone checkpoint, the init checkpoint."""
    name = model_name(cfg)
    node = cfg[name]
    return fingerprint(name, weights_settings(node, not_in_weights(node)),
                       settings(cfg.supervision, ENGINEERING + ("annotations",)),
                       settings(cfg.backbone), cfg.seed,
                       file_identity(cfg.backbone.get("weights")),
                       file_identity(node.train.get("init")),
                       targets["annotations"],
                       image_identities(split.image_root, split.images),
                       *precision(cfg, node.train))


def training(cfg, student, model, split, targets, cat_map, device):
    """(optimizer, scheduler, step) of a student under cfg.supervision: what the stage trains
    with and what bench/train.py times."""
    node, sv = cfg[model_name(cfg)], cfg.supervision
    t = node.train
    bank = InstanceBank(split, targets, category_map=cat_map, cache=t.cache_images)
    opt = student.optimizer(t, [p for p in model.parameters() if p.requires_grad])
    sched = lr_schedule(opt, t.get("schedule", "cosine"), t.max_iter, t.warmup_iter)

    rank, world = dist.rank(), dist.world_size()  # read here, not in a loader worker
    batches = BatchLoader(
        lambda it: bank.batch(it, t.batch_size, cfg.seed, t.sizes, t.max_size, flip=True,
                              rank=rank, world=world,
                              sample_points=int(sv.get("sample_points", 0)),
                              scale_jitter=tuple(t.get("scale_jitter", (1.0, 1.0)))),
        t.max_iter, cfg.hardware.get("loader_workers", 0))

    def step(m, it):
        return student.losses(m, batches(it), device)
    return opt, sched, step


def run(cfg) -> dict:
    name = model_name(cfg)
    node, sv = cfg[name], cfg.supervision
    out_dir = Path(cfg.run_dir)
    device = dist.init(cfg.hardware.device)
    torch.manual_seed(cfg.seed)
    split = get_split(cfg.dataset, node.train_split)
    supervision = build_supervision(sv)
    targets, agnostic = training_targets(cfg, split, supervision)
    cat_map, label_to_cat, num_classes = label_maps(targets, agnostic)
    student = build_student(cfg, num_classes, supervision=supervision)
    model = student.model.to(device)
    simulated = targets.pop("simulated_points", False)

    def keep_points():  # what the weights are trained on, beside them
        if simulated:
            save_coco(out_dir / f"points_{split.name}.json", targets)

    def fit():
        t = node.train
        if t.init:  # fine-tuning (e.g. the labelling assistant on new points)
            load_init(model, t.init, device)
        opt, sched, step = training(cfg, student, model, split, targets, cat_map, device)
        return train(model, opt, step, out_dir, t.max_iter, ckpt_every=t.ckpt_every,
                     log_every=t.log_every, scheduler=sched, amp=stage_amp(cfg, t),
                     grad_clip=t.grad_clip, progress=cfg.progress, seed=int(cfg.seed),
                     desc=f"{name} {sv.name}", ema=float(t.get("ema", 0.0)),
                     keep=[int(k) for k in t.get("keep_checkpoints") or ()])

    fit_or_load(out_dir, weights_fingerprint(cfg, split, targets), fit,
                save=lambda m: m.state_dict(), on_guarded=keep_points,
                load=lambda f: model.load_state_dict(torch.load(f, map_location=device,
                                                                weights_only=True)))
    predictor = StudentPredictor(student, node, device, label_to_cat)

    def class_aware(split, coco, summary):
        if agnostic or not split.has_gt or not dist.is_main():  # rank 0 alone writes metrics
            return
        ids = [im["id"] for im in coco["images"]]
        aware = evaluate(split.coco, coco["annotations"], agnostic=False, image_ids=ids)
        print(format_table({f"{MODELS[name]}, {sv.name} (class-aware)": aware}))
        summary["metrics_class_aware"] = aware
        update_json(out_dir / "metrics.json", split.name, summary)

    summaries = predict_splits(
        cfg, predictor, node.eval_splits, out_dir, prefix="predictions",
        config_key=[*prediction_settings(node), stamp_of(out_dir)],
        shard_size=node.inference.shard_size, desc=f"{name} {sv.name} " + "{split}",
        title=f"{MODELS[name]}, {sv.name} " + "({split}, class-agnostic)",
        categories=targets["categories"], each=class_aware)
    if dist.is_main():
        update_json(out_dir / "metrics.json", "speed",
                    inference_speed(predictor, get_split(cfg.dataset, cfg.dataset.report_split),
                                    int(node.inference.get("speed_images", 16)), device))
    return summaries
