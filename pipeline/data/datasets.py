"""Resolve the configured dataset into splits: an image root plus a COCO dict (GT if any).

Six kinds, one interface: `sample`, `coins`, `pasted` and `photos` (generated on first
use), `coco` (images + instances JSON per split), `folder` (a bare folder of images, no
annotations).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data import coins as coins_data
from pipeline.data import pasted as pasted_data
from pipeline.data import photos as photos_data
from pipeline.data import sample as sample_data
from pipeline.data.coco import load_coco
from pipeline.data.images import scan_images
from pipeline.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Split:
    name: str
    image_root: Path
    coco: dict            # images (+ annotations when has_gt)
    has_gt: bool
    json_path: Path | None = None
    left_out: list[dict] = field(default_factory=list)  # files listing left out, and why

    @property
    def images(self) -> list[dict]:
        return self.coco["images"]


GENERATED = ("sample", "coins", "photos", "pasted")  # dataset kinds the project writes on first use


def ensure_generated(cfg) -> None:
    """Write a built-in dataset on first use: the photos that are missing, or every split
    whose JSON is missing (the JSON is written last, so a present one means a whole split)."""
    if cfg.kind == "photos":
        photos_data.generate(cfg.images)
        return
    missing = [s for s in cfg.splits if not Path(cfg.splits[s].json).is_file()]
    if not missing:
        return
    if cfg.kind == "coins":
        log.info("writing the coins dev set (scikit-image's photograph) under %s", cfg.root)
        coins_data.generate(cfg.root, missing)
        return
    g = cfg.generate
    missing = {s: int(g.num[s]) for s in missing}
    if cfg.kind == "pasted":
        log.info("writing the pasted-coins dev set under %s", cfg.root)
        pasted_data.generate(cfg.root, seed=int(g.seed), splits=missing, size=int(g.size),
                             objects=tuple(g.objects), diameter=tuple(g.diameter),
                             min_visible_area=int(g.min_visible_area))
        return
    if missing:
        log.info("generating the embedded sample dataset under %s", cfg.root)
        sample_data.generate(cfg.root, seed=int(g.seed), splits=missing, size=int(g.size),
                             objects=tuple(g.objects), object_size=tuple(g.object_size),
                             min_visible_area=int(g.min_visible_area))


def _folder_split(name: str, folder) -> Split:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder} (set dataset.images to a folder of "
                        f"images)")
    files, left_out = scan_images(folder)
    if not files:
        raise UserError(f"no images in {folder} (looked for .jpg .jpeg .png .bmp .tif .webp, "
                        f"recursively); point dataset.images at a folder that has some")
    # width/height are filled in when each image is read (EXIF rotation can swap them)
    images = [{"id": i, "file_name": f} for i, f in enumerate(files, start=1)]
    return Split(name, folder, {"images": images, "annotations": []}, has_gt=False,
                 left_out=left_out)


def get_split(cfg, name: str) -> Split:
    """The split `name` of dataset config `cfg`."""
    if cfg.kind in GENERATED:
        ensure_generated(cfg)
    if cfg.kind in ("folder", "photos"):
        if name not in ("images", "train", "val"):
            raise UserError(f"dataset=folder has one split of images, got split {name!r}")
        return _folder_split(name, cfg.images)
    if cfg.kind not in (*GENERATED, "coco"):
        raise UserError(f"dataset.kind must be one of {', '.join(GENERATED)}, coco or folder; "
                        f"got {cfg.kind!r}")
    if name not in cfg.splits:
        raise UserError(f"dataset {cfg.name} has no split {name!r}; it has {list(cfg.splits)}")
    sc = cfg.splits[name]
    if sc.get("json"):
        coco = load_coco(sc.json, f"{name} annotations")
        if not coco["images"]:
            raise UserError(f"{sc.json} lists no images; nothing to do")
        root = Path(sc.images)
        if not root.is_dir():
            raise UserError(f"image folder for split {name!r} not found: {root} "
                            f"(set dataset.splits.{name}.images)")
        return Split(name, root, coco, has_gt=bool(coco["annotations"]), json_path=Path(sc.json))
    return _folder_split(name, sc.images)
