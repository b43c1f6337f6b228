"""Convergence curve of a student: mask AP on a split of each checkpoint one training run kept.

Train once with kept checkpoints (the stage's own run: resumable, so it can be stopped and
restarted in chunks), then evaluate every kept checkpoint and the final weights with the
stage's own predictor, sharded runner and COCO evaluator:

    python -m pipeline stage=maskrcnn supervision=full run_name=curve_full \\
        maskrcnn.train.max_iter=1200 'maskrcnn.train.keep_checkpoints=[200,400,600,800,1000]'
    python bench/convergence.py outputs/cpu_sample/curve_full [--split val]

Prints one row per checkpoint (class-agnostic mask / box AP) and writes them to
`<run>/convergence_<split>.json`. The run's own config.yaml decides the model, supervision
and inference settings. Under a decaying schedule (cosine, steps) a checkpoint before the end
was taken at a higher learning rate than a schedule of that length ends with: its AP is a
lower bound for a run trained to that many iterations; the last row is the schedule's own.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)


def kept(run_dir: Path, max_iter: int) -> list[tuple[int, Path]]:
    """(iteration, weights) of the kept checkpoints, then model.pt as max_iter."""
    rows = sorted((int(m.group(1)), p) for p in run_dir.glob("ckpt_*.pt")
                  if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name)))
    final = run_dir / "model.pt"
    if final.is_file() and all(it != max_iter for it, _ in rows):
        rows.append((max_iter, final))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", help="a student run folder with ckpt_<iteration>.pt files")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()

    import torch
    from omegaconf import OmegaConf

    from pipeline.data.datasets import get_split
    from pipeline.eval.coco_eval import evaluate
    from pipeline.io import write_json
    from pipeline.models.students import StudentPredictor, build_student
    from pipeline.provenance import BATCHING, file_identity, settings
    from pipeline.sharded import run_sharded
    from pipeline.stages.student import label_maps, model_name, training_targets

    run_dir = Path(args.run_dir).resolve()
    cfg = OmegaConf.load(run_dir / "config.yaml")
    name, node = model_name(cfg), cfg[model_name(cfg)]
    torch.set_num_threads(int(cfg.hardware.threads) or torch.get_num_threads())
    device = torch.device(cfg.hardware.device)
    targets, agnostic = training_targets(cfg, get_split(cfg.dataset, node.train_split))
    _, label_to_cat, num_classes = label_maps(targets, agnostic)
    split = get_split(cfg.dataset, args.split)
    rows = []
    for it, weights in kept(run_dir, int(node.train.max_iter)):
        torch.manual_seed(cfg.seed)
        student = build_student(cfg, num_classes, name)
        student.model.to(device).load_state_dict(
            torch.load(weights, map_location=device, weights_only=True))
        predictor = StudentPredictor(student, node, device, label_to_cat)
        work = run_dir / "convergence" / f"{it:07d}"
        coco, _ = run_sharded(split, predictor, work / f"predictions_{split.name}.json",
                              work / "shards" / split.name,
                              config_key=[settings(node.inference, BATCHING),
                                          file_identity(weights)],
                              shard_size=node.inference.shard_size,
                              workers=cfg.hardware.workers, progress=False,
                              desc=f"{name} {it}", categories=targets["categories"])
        m = evaluate(split.coco, coco["annotations"], iou_types=("segm", "bbox"),
                     image_ids=[im["id"] for im in coco["images"]])
        rows.append({"iteration": it, "mask_AP": round(m["segm"]["AP"], 1),
                     "mask_AP50": round(m["segm"]["AP50"], 1),
                     "box_AP": round(m["bbox"]["AP"], 1)})
        print(f"| {it} | {rows[-1]['mask_AP']} | {rows[-1]['mask_AP50']} | "
              f"{rows[-1]['box_AP']} |", flush=True)
    write_json(run_dir / f"convergence_{split.name}.json",
               {"run": str(run_dir), "split": split.name, "model": name,
                "supervision": cfg.supervision.name,
                "schedule": node.train.get("schedule"), "max_iter": int(node.train.max_iter),
                "rows": rows})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
