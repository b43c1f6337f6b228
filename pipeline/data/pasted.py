"""A real-image dev set with exact masks where no threshold wins by construction: the coins of
scikit-image's `coins` photograph cut out with their masks (pipeline/data/coins.py) and
pasted, scaled, rotated, re-lit and overlapping, onto crops of the textured real photographs
scikit-image ships (grass, gravel, brick, moon). Masks are the visible parts.

Nothing is shared between splits: train pastes the coins of the photograph's left half onto
the upper 60% of each texture; val and test paste the right half's coins onto the lower-left
and lower-right 40%. Deterministic: image i of a split depends only on (seed, split, i).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from tqdm import tqdm

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.io import write_json, write_with

CATEGORIES = [{"id": 1, "name": "coin", "supercategory": "object"}]
TEXTURES = ("grass", "gravel", "brick", "moon")


def coin_cutouts(side: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(grey pixels, mask) of every whole coin of the photograph's `side` half (left/right)."""
    from pipeline.data.coins import coin_labels
    img, labels = coin_labels()
    half = img.shape[1] // 2
    out = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        m = labels[sl] == k
        centre = (sl[1].start + sl[1].stop) / 2
        if (centre < half) == (side == "left"):
            out.append((img[sl].astype(np.float32), m))
    return out


def texture_window(name: str, split: str) -> np.ndarray:
    """The part of a texture photograph a split draws its backgrounds from (grey, float)."""
    from skimage import data
    t = np.asarray(getattr(data, name)(), dtype=np.float32)
    h, w = t.shape[:2]
    top = int(h * 0.6)
    if split == "train":
        return t[:top]
    return t[top:, : w // 2] if split == "val" else t[top:, w // 2:]


def _resize(arr: np.ndarray, shape, resample) -> np.ndarray:
    mode = "F" if arr.dtype != bool else "L"
    im = Image.fromarray(arr.astype(np.float32) if mode == "F" else arr.astype(np.uint8) * 255)
    out = np.asarray(im.resize((shape[1], shape[0]), resample))
    return out if arr.dtype != bool else out > 127


def render_image(seed: int, split: str, index: int, size: int = 160, objects=(2, 6),
                 diameter=(24, 64), min_visible_area: int = 80, coins=None, windows=None):
    """One composed image and its coins: (HxWx3 uint8, [mask, ...])."""
    rng = np.random.default_rng([seed, sum(ord(c) for c in split), index])
    coins = coins if coins is not None else coin_cutouts("left" if split == "train" else "right")
    windows = windows or {n: texture_window(n, split) for n in TEXTURES}
    bg = windows[TEXTURES[int(rng.integers(len(TEXTURES)))]]
    crop = int(rng.integers(size, min(bg.shape[0], bg.shape[1], 2 * size) + 1))
    y0 = int(rng.integers(0, bg.shape[0] - crop + 1))
    x0 = int(rng.integers(0, bg.shape[1] - crop + 1))
    image = _resize(bg[y0:y0 + crop, x0:x0 + crop], (size, size), Image.BILINEAR).copy()
    visible: list[np.ndarray] = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        pix, m = coins[int(rng.integers(len(coins)))]
        scale = rng.uniform(*diameter) / max(m.shape)
        shape = (max(2, round(m.shape[0] * scale)), max(2, round(m.shape[1] * scale)))
        pix, m = _resize(pix, shape, Image.BILINEAR), _resize(m, shape, Image.NEAREST)
        angle = float(rng.uniform(0, 360))
        pix = ndi.rotate(pix, angle, order=1, reshape=True)
        m = ndi.rotate(m.astype(np.float32), angle, order=0, reshape=True) > 0.5
        pix = pix * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)   # another light
        h, w = m.shape
        if h >= size or w >= size:
            continue
        # anywhere, also partly out of the image: objects are cut by the frame too
        oy = int(rng.integers(-h // 3, size - 2 * h // 3))
        ox = int(rng.integers(-w // 3, size - 2 * w // 3))
        full = np.zeros((size, size), bool)
        ys, xs = slice(max(oy, 0), min(oy + h, size)), slice(max(ox, 0), min(ox + w, size))
        sub = m[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox]
        full[ys, xs] = sub
        image[ys, xs][sub] = pix[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox][sub]
        visible = [v & ~full for v in visible]  # the new coin occludes the ones below it
        visible.append(full)
    image = image + rng.normal(0, 2.0, image.shape)  # sensor noise
    rgb = np.repeat(np.clip(image, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    return rgb, [v for v in visible if v.sum() >= min_visible_area]


def generate(root, seed: int = 0, splits: dict | None = None, size: int = 160, objects=(2, 6),
             diameter=(24, 64), min_visible_area: int = 80,
             progress: bool = True) -> dict[str, Path]:
    """Write `root/{split}/*.png` and `root/annotations/instances_{split}.json` (JSON last)."""
    root = Path(root)
    splits = splits or {"train": 96, "val": 32, "test": 64}
    out = {}
    for split, count in splits.items():
        coins = coin_cutouts("left" if split == "train" else "right")
        windows = {n: texture_window(n, split) for n in TEXTURES}
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in tqdm(range(count), desc=f"pasted coins {split}", disable=not progress):
            img, masks = render_image(seed, split, i, size, tuple(objects), tuple(diameter),
                                      min_visible_area, coins, windows)
            name = f"{split}_{i:05d}.png"
            write_with(root / split / name, lambda f, a=img: Image.fromarray(a).save(f, "PNG"))
            images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
            anns += [mask_to_annotation(m, i + 1, 1) for m in masks]
        path = root / "annotations" / f"instances_{split}.json"
        write_json(path, make_coco(images, anns, CATEGORIES,
                                   {"description": f"coins pasted on textures ({split})",
                                    "seed": seed}))
        out[split] = path
    return out
