"""Run a per-image predictor over a split in resumable shards.

Shards of `shard_size` images are written atomically, each with the fingerprint of what made
it: the settings, `strict`, and the identity of each of its images (id, file name, a hash of
the bytes). A rerun (after a crash or kill -9) reuses a shard only when that fingerprint
matches, so other images under the same names (even with the same size and mtime), an image
repaired in place or a stricter rerun recomputes exactly the shards concerned. The merged file is identical to that of an
uninterrupted run.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from pipeline import dist
from pipeline.data.coco import AGNOSTIC_CATEGORY, make_coco, save_coco
from pipeline.data.datasets import Split
from pipeline.data.images import LINK_PROBLEMS, ImageReadError, read_rgb
from pipeline.errors import UserError
from pipeline.io import read_json, write_json
from pipeline.provenance import fingerprint, image_identities

log = logging.getLogger(__name__)

# predictor(list of (image_info, HxWx3 uint8)) -> list of annotation lists, one per image
Predictor = Callable[[list[tuple[dict, np.ndarray]]], list[list[dict]]]


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
    broken = [r for r in split.left_out if r["reason"] in LINK_PROBLEMS]
    if strict and broken:  # a link is an image the user meant to include
        raise UserError(f"cannot read image {split.image_root / broken[0]['file_name']}: "
                        f"{broken[0]['reason']} (strict=true; set strict=false to skip such "
                        f"images)")
    infos = sorted(split.images, key=lambda im: im["id"])
    chunks = [infos[i:i + shard_size] for i in range(0, len(infos), shard_size)]
    idents = image_identities(split.image_root, infos)  # every image hashed (or cached) once
    keys = [fingerprint(config_key, bool(strict), idents[i:i + shard_size])
            for i in range(0, len(infos), shard_size)]
    paths = [work_dir / f"shard_{i:05d}.json" for i in range(len(chunks))]
    # shards in hand, by index: the finished ones read once here, the new ones as written
    have = {i: s for i, (p, k) in enumerate(zip(paths, keys))
            if (s := _read_shard(p)) is not None and s.get("fingerprint") == k}
    done = [i in have for i in range(len(chunks))]
    stale = sum(p.is_file() and not d for p, d in zip(paths, done))
    if stale:
        log.warning("recomputing %d shard(s) in %s: made from other images or settings",
                    stale, work_dir)
    if any(done):
        log.info("resuming: %d of %d shards already done in %s", sum(done), len(chunks),
                 work_dir)
    # under torchrun each rank predicts every world-th shard; all merge once all are written
    rank, world = dist.rank(), dist.world_size()
    bar = tqdm(total=len(infos), desc=desc, unit="img", disable=not progress or rank != 0)
    for i, (chunk, shard, key, ok) in enumerate(zip(chunks, paths, keys, done)):
        if ok or i % world != rank:
            bar.update(len(chunk))
            continue
        loaded, skipped = load_images(split, chunk, workers, strict)
        anns = predictor(loaded) if loaded else []
        have[i] = {"fingerprint": key, "rank": rank, "images": [im for im, _ in loaded],
                   "annotations": [a for per in anns for a in per], "skipped": skipped}
        write_json(shard, have[i])
        bar.update(len(chunk))
    bar.close()
    dist.barrier()
    coco, skipped = merge_shards(work_dir, len(chunks), out_json if dist.is_main() else None,
                                 categories, info, have)
    return coco, split.left_out + skipped


def _read_shard(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except UserError:  # unreadable shard: recompute it
        return None


def merge_shards(work_dir, n: int, out_json, categories=None, info=None,
                 have: dict[int, dict] | None = None):
    """Concatenate shards 0..n-1 in order; those not in `have` (e.g. another rank's) are read."""
    images, anns, skipped = [], [], []
    have = have or {}
    for i in range(n):
        s = have[i] if i in have else read_json(Path(work_dir) / f"shard_{i:05d}.json")
        images += s["images"]
        anns += s["annotations"]
        skipped += s["skipped"]
    coco = make_coco(images, anns, categories or [AGNOSTIC_CATEGORY], info)
    if out_json is not None:
        save_coco(out_json, coco)
    return coco, skipped

