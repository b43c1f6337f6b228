"""What every predicting stage does after predicting: skipped report, overlays, evaluation."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.data.datasets import Split
from pipeline.data.images import ImageReadError, read_rgb
from pipeline.eval.coco_eval import evaluate, format_table
from pipeline.io import read_json, write_json
from pipeline.viz import save_overlays

log = logging.getLogger(__name__)


def update_json(path: Path, key: str, value) -> dict:
    data = read_json(path) if path.is_file() else {}
    data[key] = value
    write_json(path, data, indent=2)
    return data


def finish_split(cfg, split: Split, coco: dict, skipped: list[dict], out_dir: Path,
                 out_json: Path, title: str) -> dict:
    """Reports, overlays and evaluation: by rank 0 alone under torchrun."""
    from pipeline import dist
    if not dist.is_main():
        return {"predictions": str(out_json), "images": len(coco["images"]),
                "masks": len(coco["annotations"]), "skipped": len(skipped)}
    out_dir = Path(out_dir)
    update_json(out_dir / "skipped.json", split.name, skipped)
    if skipped:
        log.warning("%d image(s) of split %s could not be read; listed in %s", len(skipped),
                    split.name, out_dir / "skipped.json")
    n = int(cfg.get("overlays", 0))
    if n:
        shown = []
        for info in coco["images"][:n]:
            try:
                shown.append((info, read_rgb(split.image_root / info["file_name"])))
            except ImageReadError:
                continue
        save_overlays(out_dir / "overlays" / split.name, shown, coco)
    summary = {"predictions": str(out_json), "images": len(coco["images"]),
               "masks": len(coco["annotations"]), "skipped": len(skipped)}
    if split.has_gt:
        ids = [im["id"] for im in coco["images"]]  # skipped images are not scored
        summary["metrics"] = evaluate(split.coco, coco["annotations"], image_ids=ids)
        print(format_table({title: summary["metrics"]}))
    update_json(out_dir / "metrics.json", split.name, summary)
    log.info("%s: %d masks on %d images -> %s", title, summary["masks"], summary["images"],
             out_json)
    return summary


def predict_splits(cfg, predictor, split_names, out_dir, *, prefix: str, config_key,
                   shard_size: int, desc: str, title: str, info: dict | None = None,
                   categories: list[dict] | None = None, each=None) -> dict[str, dict]:
    """Every predicting stage's loop: for each split (once, in order) predict every image in
    shards (`run_sharded`: resumable, reused only under the same `config_key`), write
    `<out_dir>/<prefix>_<split>.json`, then report it (`finish_split`). `title` and `desc`
    may name the split as {split}. each(split, coco, summary): what the stage does next with
    a split's predictions (e.g. self-training targets). Returns {split name: summary}."""
    from pipeline.data.datasets import get_split
    from pipeline.sharded import run_sharded
    out_dir = Path(out_dir)
    results = {}
    for name in dict.fromkeys(split_names):
        split = get_split(cfg.dataset, name)
        out_json = out_dir / f"{prefix}_{name}.json"
        coco, skipped = run_sharded(split, predictor, out_json, out_dir / "shards" / name,
                                    config_key=config_key, shard_size=shard_size,
                                    workers=cfg.hardware.workers, strict=cfg.strict,
                                    progress=cfg.progress, desc=desc.format(split=name),
                                    info=info, categories=categories)
        results[name] = finish_split(cfg, split, coco, skipped, out_dir, out_json,
                                     title.format(split=name))
        if each is not None:
            each(split, coco, results[name])
    return results
