"""FreeSOLO's training views for self-supervised SOLO: instances copy-pasted between images,
then a strong photometric view for the network while the weak view (the pasted image's own
colours) feeds the colour-affinity loss (FreeSOLO Sec. 3.2 and its released training code).

Every random choice comes from the numpy Generator passed in, itself seeded by (seed,
iteration, rank, slot) in the data path, so a resumed run makes the same views.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool, none empty -> (N, 4) xyxy boxes at pixel edges (torchvision's boxes
    run to the last pixel's index, COCO's to its far edge: +1)."""
    from torchvision.ops import masks_to_boxes as last_pixel_boxes
    return last_pixel_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def copy_paste(dst: dict, src: dict, rng: np.random.Generator, max_instances: int = 3,
               min_visible: int = 16) -> dict:
    """Paste up to `max_instances` of src's instances (pixels under their masks) onto dst,
    src resized to dst's size first. Pasted instances occlude dst's: their masks lose the
    covered pixels, and instances left with fewer than `min_visible` pixels are dropped."""
    if "masks" not in dst or "masks" not in src or not len(src["masks"]):
        return dst
    h, w = dst["image"].shape[-2:]
    k = int(rng.integers(1, min(max_instances, len(src["masks"])) + 1))
    pick = torch.from_numpy(rng.choice(len(src["masks"]), size=k, replace=False))
    image = F.interpolate(src["image"][None].float(), size=(h, w), mode="bilinear",
                          align_corners=False)[0]
    masks = F.interpolate(src["masks"][pick][None].float(), size=(h, w), mode="nearest")[0] > 0.5
    keep_new = masks.flatten(1).sum(1) >= min_visible
    masks = masks[keep_new]
    if not len(masks):
        return dst
    covered = masks.any(0)
    out = dict(dst)
    out["image"] = torch.where(covered[None], image, dst["image"].float())
    old = dst["masks"] & ~covered
    keep_old = old.flatten(1).sum(1) >= min_visible
    out["masks"] = torch.cat([old[keep_old], masks])
    out["labels"] = torch.cat([dst["labels"][keep_old], src["labels"][pick][keep_new]])
    out["boxes"] = masks_to_boxes(out["masks"])
    for key in ("embeddings",):  # per-instance extras follow their instances
        if key in dst and key in src:
            out[key] = torch.cat([dst[key][keep_old], src[key][pick][keep_new]])
        else:
            out.pop(key, None)
    return out


def strong_view(image: torch.Tensor, rng: np.random.Generator, jitter: float = 0.4,
                grayscale_p: float = 0.2, blur_p: float = 0.5, erase_p: float = 0.7) -> torch.Tensor:
    """(3, H, W) float 0-255 -> photometrically strong view of the same geometry: colour
    jitter (brightness, contrast, saturation), random grayscale, Gaussian blur, and random
    erasing of up to 3 small patches (the masks stay: erased pixels are occlusions)."""
    x = image.float() / 255.0
    b, c, s = (1 + rng.uniform(-jitter, jitter) for _ in range(3))
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = (x - gray) * s + gray
    if rng.random() < grayscale_p:
        x = gray.expand(3, -1, -1).clone()
    if rng.random() < blur_p:
        sigma = float(rng.uniform(0.1, 2.0))
        r = max(1, int(round(2 * sigma)))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-t ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        x = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(
            3, 1, 1, 1), groups=3)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(
            3, 1, 1, 1), groups=3)[0]
    if rng.random() < erase_p:
        h, w = x.shape[-2:]
        for _ in range(int(rng.integers(1, 4))):
            eh, ew = (max(1, int(d * rng.uniform(0.05, 0.2))) for d in (h, w))
            y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            x[:, y0:y0 + eh, x0:x0 + ew] = float(rng.random())
    return (x.clamp(0, 1) * 255.0)


def training_views(samples: list[dict], seed_parts: list[int], copy_paste_p: float = 0.0,
                   strong: bool = False, max_paste: int = 3) -> list[dict]:
    """Per sample: with probability copy_paste_p, instances of another sample of the batch
    pasted in; then, if `strong`, the strong view under key "strong" ("image" stays the
    weak view, whose colours the pairwise loss compares)."""
    out = []
    for j, s in enumerate(samples):
        rng = np.random.default_rng([*seed_parts, j])
        if copy_paste_p and len(samples) > 1 and rng.random() < copy_paste_p:
            other = (j + 1 + int(rng.integers(len(samples) - 1))) % len(samples)
            s = copy_paste(s, samples[other], rng, max_paste)
        if strong:
            s = dict(s, strong=strong_view(s["image"], rng))
        out.append(s)
    return out
