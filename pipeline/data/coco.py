"""COCO JSON in and out: RLE masks, class-agnostic views, validation with clear errors.

Everything written here is readable by pycocotools and by detectron2's `load_coco_json`
(RLE `counts` stored as str; extra keys such as score/maskness/point_coords pass through).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.data.coco_checks import rle_counts, validate
from pipeline.errors import UserError
from pipeline.io import paused_gc, read_json, write_json, write_with

AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def encode_mask(mask: np.ndarray) -> dict:
    """Binary HxW mask -> COCO RLE with a JSON-friendly str `counts`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """Polygon, uncompressed RLE or compressed RLE -> HxW uint8 mask."""
    if isinstance(seg, list):
        rles = mask_utils.frPyObjects(seg, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = pycocotools_rle(seg)
    return mask_utils.decode(rle)


def mask_values_at(seg: Any, height: int, width: int, xs: np.ndarray,
                   ys: np.ndarray) -> np.ndarray:
    """decode_segmentation(seg, height, width)[ys, xs], read off the run lengths instead of a
    dense mask: the same pycocotools RLE, so the same values (tested), at a fraction of the
    time and memory. At COCO size this keeps point sampling linear and small."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    counts = rle["counts"]
    runs = rle_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts) \
        if not isinstance(counts, list) else np.asarray(counts, np.int64)
    # column-major runs, background first: the run holding pixel (x, y) says its value
    k = np.searchsorted(np.cumsum(runs), np.asarray(xs) * height + np.asarray(ys), side="right")
    return (k % 2).astype(np.uint8)


def pycocotools_rle(seg: dict) -> dict:
    """A compressed RLE as stored in our JSON (str counts) -> the form pycocotools takes."""
    rle = dict(seg)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def mask_to_annotation(mask: np.ndarray, image_id: int, category_id: int = 1, **extra) -> dict:
    rle = encode_mask(mask)
    x, y, w, h = mask_utils.toBbox(pycocotools_rle(rle)).tolist()
    ann = {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": rle,
        "area": float(mask.sum()),
        "bbox": [float(x), float(y), float(w), float(h)],
        "iscrowd": 0,
    }
    ann.update(extra)
    return ann


def make_coco(images: list[dict], annotations: list[dict],
              categories: list[dict] | None = None, info: dict | None = None) -> dict:
    """A COCO dict with annotation ids assigned 1..N in the given order."""
    anns = []
    for i, a in enumerate(annotations, start=1):
        a = dict(a)
        a["id"] = i
        anns.append(a)
    return {
        "info": info or {"description": "weakseg"},
        "images": images,
        "annotations": anns,
        "categories": categories or [AGNOSTIC_CATEGORY],
    }


def load_coco(path, what: str = "COCO annotation file") -> dict:
    """Read and sanity-check a COCO file; errors name the file and the problem. Embeddings kept
    beside it (see `save_coco`) are put back on their annotations."""
    data = read_json(path, what)
    with paused_gc():
        data = validate(data, path, what)
    if isinstance(data.get("info"), dict) and data["info"].get("embeddings"):
        _attach_embeddings(data, Path(path), what)
    return data


def save_coco(path, data: dict) -> Path:
    """Write a COCO file. Per-annotation `embedding` vectors (free masks: 128 numbers each)
    go to `<name>.embeddings.npz` beside it (list positions + a float32 matrix), which the
    JSON's info names with a checksum: the JSON stays small for pycocotools and detectron2,
    and a reader never pairs it with another run's vectors."""
    path = Path(path)
    carried = [i for i, a in enumerate(data["annotations"]) if "embedding" in a]
    if carried:
        ids = np.array(carried, np.int64)           # positions in the annotation list
        vecs = np.array([data["annotations"][i]["embedding"] for i in carried], np.float32)
        side = path.with_name(f"{path.stem}.embeddings.npz")
        write_with(side, lambda f: np.savez(f, ids=ids, embeddings=vecs))
        info = dict(data.get("info") or {}, embeddings={
            "file": side.name, "count": len(ids), "sha1": _checksum(ids, vecs)})
        data = dict(data, info=info, annotations=[
            {k: v for k, v in a.items() if k != "embedding"} for a in data["annotations"]])
    elif isinstance(data.get("info"), dict) and "embeddings" in data["info"]:
        # loaded with embeddings, written without: the old sidecar must not pair with it
        data = dict(data, info={k: v for k, v in data["info"].items() if k != "embeddings"})
    return write_json(path, data)


def _checksum(ids: np.ndarray, vecs: np.ndarray) -> str:
    return hashlib.sha1(ids.tobytes() + vecs.tobytes()).hexdigest()


def _attach_embeddings(data: dict, path: Path, what: str) -> None:
    meta = data["info"]["embeddings"]
    side = path.with_name(str(meta.get("file")))
    try:
        with np.load(side) as z:
            ids, vecs = z["ids"], z["embeddings"]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{what} {path} keeps its embeddings in {side}, which cannot be read "
                        f"({e}); rerun the stage that wrote them") from None
    if len(ids) != meta.get("count") or _checksum(ids, vecs) != meta.get("sha1"):
        raise UserError(f"{side} does not hold the embeddings {path} was written with (another "
                        f"run's file?); rerun the stage that wrote them")
    anns = data["annotations"]
    if len(ids) and int(ids.max()) >= len(anns):
        raise UserError(f"{side} holds embeddings for more annotations than {path} has; rerun "
                        f"the stage that wrote them")
    for i, v in zip(ids.tolist(), vecs.tolist()):
        anns[i]["embedding"] = v


def class_agnostic(data: dict) -> dict:
    """Copy of `data` with every annotation in the one 'object' category."""
    out = dict(data)
    out["categories"] = [AGNOSTIC_CATEGORY]
    out["annotations"] = [dict(a, category_id=1) for a in data["annotations"]]
    return out


def annotations_by_image(data: dict) -> dict[int, list[dict]]:
    by: dict[int, list[dict]] = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        by[a["image_id"]].append(a)
    return by


def scored_at_least(data: dict, min_score: float) -> dict:
    """Copy of `data` keeping the annotations scoring >= min_score; one without a score
    (ground truth) stays."""
    return dict(data, annotations=[a for a in data["annotations"]
                                   if a.get("score", min_score) >= min_score])


def subset_images(data: dict, image_ids: Iterable[int]) -> dict:
    keep = set(image_ids)
    out = dict(data)
    out["images"] = [im for im in data["images"] if im["id"] in keep]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return out
