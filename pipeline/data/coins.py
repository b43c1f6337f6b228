"""A small real-image dev set: scikit-image's bundled `coins` photograph with instance masks.

The photograph (303x384, 24 coins) ships inside scikit-image, so nothing is downloaded. Masks
come from the classical watershed of scikit-image's coins tutorial (Sobel elevation, markers
below 30 / above 150, holes filled), checked by eye: one mask per coin, no merges.
train = 128 px crops (stride 32) of the left half; val = the right half as one image.
Generated on first use, deterministic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.io import write_json, write_with

CATEGORIES = [{"id": 1, "name": "coin", "supercategory": "object"}]


def coin_labels() -> tuple[np.ndarray, np.ndarray]:
    """(grayscale photo, instance label map) of scikit-image's coins."""
    from skimage import data, filters, segmentation
    img = data.coins()
    markers = np.zeros_like(img)
    markers[img < 30], markers[img > 150] = 1, 2
    fg = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(img), markers) - 1)
    labels, n = ndi.label(fg)
    sizes = ndi.sum(fg, labels, range(1, n + 1))
    for i, s in enumerate(sizes, start=1):
        if s < 50:
            labels[labels == i] = 0
    return img, labels


def split_windows(shape, crop: int = 128, stride: int = 32) -> dict[str, list[tuple]]:
    """(y0, x0, h, w) windows per split: crops of the left half, the right half whole."""
    h, w = shape
    half = w // 2
    train = [(y, x, crop, crop) for y in range(0, h - crop + 1, stride)
             for x in range(0, half - crop + 1, stride)]
    return {"train": train, "val": [(0, half, h, w - half)]}


def generate(root, splits=None, min_area: int = 20) -> dict[str, Path]:
    """Write `root/{split}/*.png` and `root/annotations/instances_{split}.json` (JSON last)."""
    root = Path(root)
    img, labels = coin_labels()
    windows = split_windows(img.shape)
    out = {}
    for split in splits or windows:
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for y0, x0, h, w in windows[split]:
            iid = len(images) + 1
            name = f"coins_{y0:03d}_{x0:03d}.png"
            crop = Image.fromarray(np.stack([img[y0:y0 + h, x0:x0 + w]] * 3, -1))
            write_with(root / split / name, lambda f, c=crop: c.save(f, "PNG"))
            images.append({"id": iid, "file_name": name, "height": h, "width": w})
            sub = labels[y0:y0 + h, x0:x0 + w]
            for v in np.unique(sub[sub > 0]):
                m = sub == v
                if m.sum() >= min_area:
                    anns.append(mask_to_annotation(m, iid, 1))
        path = root / "annotations" / f"instances_{split}.json"
        write_json(path, make_coco(images, anns, CATEGORIES,
                                   {"description": f"skimage coins, real photo ({split})"}))
        out[split] = path
    return out
