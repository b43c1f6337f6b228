"""Run a per-image predictor over a split in resumable shards.

Shards of `shard_size` images are written atomically; a rerun (after a crash or kill -9)
skips finished shards, and shards made under a different configuration are discarded.
The merged file is identical to that of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from pipeline.data.coco import AGNOSTIC_CATEGORY, make_coco, save_coco
from pipeline.data.datasets import Split
from pipeline.data.images import ImageReadError, read_rgb
from pipeline.errors import UserError
from pipeline.io import read_json, write_json

log = logging.getLogger(__name__)

# predictor(list of (image_info, HxWx3 uint8)) -> list of annotation lists, one per image
Predictor = Callable[[list[tuple[dict, np.ndarray]]], list[list[dict]]]


def fingerprint(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def load_images(split: Split, infos: list[dict], workers: int = 4, strict: bool = False):
    """Read images in parallel; returns ([(info, array)], [skipped records])."""
    def read(info):
        try:
            return info, read_rgb(split.image_root / info["file_name"]), None
        except ImageReadError as e:
            return info, None, e

    loaded, skipped = [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for info, arr, err in pool.map(read, infos):
            if err is None and "height" in info and (info["height"], info["width"]) != arr.shape[:2]:
                err = ImageReadError(split.image_root / info["file_name"],
                                     f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from "
                                     f"the annotation's {info['width']}x{info['height']}")
            if err is not None:
                if strict:
                    raise UserError(f"cannot read image {err.path}: {err.reason} "
                                    f"(strict=true; set strict=false to skip such images)")
                log.warning("skipping image %s: %s", err.path, err.reason)
                skipped.append({"image_id": info["id"], "file_name": info["file_name"],
                                "reason": err.reason})
                continue
            info = dict(info, height=int(arr.shape[0]), width=int(arr.shape[1]))
            loaded.append((info, arr))
    return loaded, skipped


def run_sharded(split: Split, predictor: Predictor, out_json, work_dir, config_key,
                shard_size: int = 256, workers: int = 4, strict: bool = False,
                categories: list[dict] | None = None, progress: bool = True,
                desc: str = "predict", info: dict | None = None) -> tuple[dict, list[dict]]:
    """Predict every image of `split`; write the merged COCO file; return (coco, skipped)."""
    work_dir = Path(work_dir)
    infos = sorted(split.images, key=lambda im: im["id"])
    key = fingerprint(config_key, [(im["id"], im["file_name"]) for im in infos], shard_size)
    manifest = work_dir / "manifest.json"
    if work_dir.exists():
        old = read_json(manifest).get("fingerprint") if manifest.is_file() else None
        if old != key:
            log.warning("discarding shards in %s: they were made with another configuration",
                        work_dir)
            shutil.rmtree(work_dir)
    write_json(manifest, {"fingerprint": key, "num_images": len(infos), "shard_size": shard_size})

    chunks = [infos[i:i + shard_size] for i in range(0, len(infos), shard_size)]
    done = sum((work_dir / f"shard_{i:05d}.json").is_file() for i in range(len(chunks)))
    if done:
        log.info("resuming: %d of %d shards already done in %s", done, len(chunks), work_dir)
    bar = tqdm(total=len(infos), desc=desc, unit="img", disable=not progress)
    for i, chunk in enumerate(chunks):
        shard = work_dir / f"shard_{i:05d}.json"
        if shard.is_file():
            bar.update(len(chunk))
            continue
        loaded, skipped = load_images(split, chunk, workers, strict)
        anns = predictor(loaded) if loaded else []
        write_json(shard, {"images": [im for im, _ in loaded],
                           "annotations": [a for per in anns for a in per],
                           "skipped": skipped})
        bar.update(len(chunk))
    bar.close()
    return merge_shards(work_dir, len(chunks), out_json, categories, info)


def merge_shards(work_dir, n: int, out_json, categories=None, info=None):
    images, anns, skipped = [], [], []
    for i in range(n):
        s = read_json(Path(work_dir) / f"shard_{i:05d}.json")
        images += s["images"]
        anns += s["annotations"]
        skipped += s["skipped"]
    coco = make_coco(images, anns, categories or [AGNOSTIC_CATEGORY], info)
    save_coco(out_json, coco)
    return coco, skipped

