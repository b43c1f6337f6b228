"""The embedded sample: a seeded synthetic COCO dataset in which grouping pixels is not trivial.

Objects of five shape families (the categories) with solid, striped, checked, noisy or
gradient fills sit on textured backgrounds and occlude each other; masks are the visible
parts. Deterministic: image i of a split depends only on (seed, split, i).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon as draw_polygon
from tqdm import tqdm

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.io import write_json, write_with

CATEGORIES = [
    {"id": i + 1, "name": n, "supercategory": "shape"}
    for i, n in enumerate(["ellipse", "rectangle", "triangle", "star", "blob"])
]


def _smooth_noise(rng, h, w, cells):
    """Low-frequency noise in [0, 1]: bilinear upsampling of a coarse random grid."""
    coarse = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _texture(rng, h, w, yy, xx, base):
    """Fill an HxWx3 float image with `base` colour modulated by a random texture."""
    kind = rng.choice(["solid", "stripes", "checker", "noise", "gradient"])
    colour = np.broadcast_to(base, (h, w, 3)).copy()
    if kind == "solid":
        return colour, kind
    other = np.clip(base + rng.uniform(-0.35, 0.35, 3), 0, 1)
    if kind == "stripes":
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        t = (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0)
    elif kind == "checker":
        s = int(rng.integers(3, 9))
        t = ((yy // s + xx // s) % 2).astype(bool)
    elif kind == "noise":
        t = _smooth_noise(rng, h, w, int(rng.integers(6, 20))) > 0.5
    else:  # gradient
        theta = rng.uniform(0, 2 * math.pi)
        g = (xx * math.cos(theta) + yy * math.sin(theta))
        g = (g - g.min()) / max(np.ptp(g), 1e-6)
        return colour * (1 - g[..., None]) + other * g[..., None], kind
    colour[t] = other
    return colour, kind


def _shape_mask(rng, family, h, w, yy, xx, size):
    cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    a = size / 2
    b = a * rng.uniform(0.45, 1.0)
    if family == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if family == "rectangle":
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if family in ("triangle", "star"):
        n = 3 if family == "triangle" else int(rng.integers(5, 8))
        k = n if family == "triangle" else 2 * n
        angles = theta + np.arange(k) * 2 * math.pi / k + rng.uniform(-0.2, 0.2, k)
        radii = np.full(k, a)
        if family == "star":
            radii[1::2] = a * rng.uniform(0.4, 0.6)
        mask = np.zeros((h, w), bool)
        rr, cc = draw_polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), (h, w))
        mask[rr, cc] = True
        return mask
    # blob: radius varies smoothly with the angle
    ang = np.arctan2(yy - cy, xx - cx)
    r = np.full_like(ang, 1.0)
    for k in (2, 3, 5):
        r = r + rng.uniform(0, 0.18) * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
    return np.hypot(yy - cy, xx - cx) <= a * r


def render_image(seed: int, split: str, index: int, size: int = 160,
                 objects=(3, 6), object_size=(28, 72), min_visible_area: int = 80):
    """One synthetic image and its instances: (HxWx3 uint8, [(category_id, mask), ...])."""
    split_code = sum(ord(ch) for ch in split)
    rng = np.random.default_rng([seed, split_code, index])
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    bg_base = rng.uniform(0.15, 0.85, 3)
    image, _ = _texture(rng, h, w, yy, xx, bg_base)
    shade = _smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    image = image * (0.75 + 0.5 * shade[..., None])

    n = int(rng.integers(objects[0], objects[1] + 1))
    visible: list[tuple[int, np.ndarray]] = []
    for _ in range(n):
        cat = int(rng.integers(len(CATEGORIES)))
        mask = _shape_mask(rng, CATEGORIES[cat]["name"], h, w, yy, xx,
                           rng.uniform(*object_size))
        if mask.sum() < min_visible_area:
            continue
        # object colour: sometimes close to the background, so colour alone is not enough
        base = np.clip(bg_base + rng.uniform(-0.6, 0.6, 3), 0, 1) if rng.random() < 0.8 \
            else np.clip(bg_base + rng.uniform(-0.2, 0.2, 3), 0, 1)
        fill, _ = _texture(rng, h, w, yy, xx, base)
        light = 0.85 + 0.3 * _smooth_noise(rng, h, w, 3)
        image[mask] = (fill * light[..., None])[mask]
        visible = [(c, m & ~mask) for c, m in visible]  # new object occludes earlier ones
        visible.append((cat + 1, mask))

    image = image + rng.normal(0, 0.02, image.shape)  # sensor noise
    image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    instances = [(c, m) for c, m in visible if m.sum() >= min_visible_area]
    return image, instances


def generate(root, seed: int = 0, splits: dict | None = None, size: int = 160,
             objects=(3, 6), object_size=(28, 72), min_visible_area: int = 80,
             progress: bool = True) -> dict[str, tuple[Path, Path]]:
    """Write `root/{split}/*.png` and `root/annotations/instances_{split}.json`.

    Returns {split: (image_dir, json_path)}. Files are written atomically; the JSON last,
    so a present JSON means a complete split.
    """
    root = Path(root)
    splits = splits or {"train": 96, "val": 32}
    out = {}
    for split, count in splits.items():
        img_dir = root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in tqdm(range(count), desc=f"sample {split}", disable=not progress):
            img, instances = render_image(seed, split, i, size, tuple(objects),
                                          tuple(object_size), min_visible_area)
            name = f"{split}_{i:05d}.png"
            write_with(img_dir / name, lambda f, a=img: Image.fromarray(a).save(f, "PNG"))
            image_id = i + 1
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            anns += [mask_to_annotation(m, image_id, c) for c, m in instances]
        data = make_coco(images, anns, CATEGORIES,
                         info={"description": f"weakseg synthetic sample ({split})", "seed": seed})
        json_path = root / "annotations" / f"instances_{split}.json"
        write_json(json_path, data)
        out[split] = (img_dir, json_path)
    return out
