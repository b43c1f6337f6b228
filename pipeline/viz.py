"""Pictures people would rather look at: mask overlays and AP-vs-cost plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.coco import decode_segmentation
from pipeline.io import write_with


def _palette(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.25, 1.0, (max(n, 1), 3)) * 255).astype(np.uint8)


def overlay(image: np.ndarray, anns: list[dict], alpha: float = 0.5,
            max_masks: int = 20, show_score: bool = True) -> Image.Image:
    """Draw the top `max_masks` annotations (by score when present) over an RGB image."""
    h, w = image.shape[:2]
    anns = sorted(anns, key=lambda a: -a.get("score", 1.0))[:max_masks]
    colours = _palette(len(anns))
    out = image.astype(np.float32).copy()
    for a, c in zip(anns, colours):
        m = decode_segmentation(a["segmentation"], h, w).astype(bool)
        out[m] = out[m] * (1 - alpha) + c * alpha
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for a, c in zip(anns, colours):
        x, y, bw, bh = a["bbox"]
        draw.rectangle([x, y, x + bw, y + bh], outline=tuple(int(v) for v in c))
        if show_score and "score" in a:
            draw.text((x + 1, y + 1), f"{a['score']:.2f}", fill=(255, 255, 255))
    return pil


def save_overlays(out_dir, images: list[tuple[dict, np.ndarray]], coco: dict,
                  max_masks: int = 20, scale: int = 2) -> list[Path]:
    """One PNG per image: image | predicted masks side by side, upscaled for small images."""
    from pipeline.data.coco import annotations_by_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_image = annotations_by_image(coco)
    paths = []
    for info, arr in images:
        ov = overlay(arr, by_image.get(info["id"], []), max_masks=max_masks)
        both = Image.new("RGB", (arr.shape[1] * 2, arr.shape[0]))
        both.paste(Image.fromarray(arr), (0, 0))
        both.paste(ov, (arr.shape[1], 0))
        if scale != 1:
            both = both.resize((both.width * scale, both.height * scale), Image.NEAREST)
        p = out_dir / f"{Path(info['file_name']).stem}.png"
        write_with(p, lambda f, im=both: im.save(f, format="PNG"))
        paths.append(p)
    return paths
