"""What "no learning" scores: trivial mask proposals every results table shows."""
from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components
from skimage.transform import resize


def whole_image(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """One mask covering the whole image."""
    return [(np.ones(image.shape[:2], bool), 1.0)]


def _kmeans(x: np.ndarray, k: int, iters: int, rng) -> np.ndarray:
    centres = x[rng.choice(len(x), size=min(k, len(x)), replace=False)]
    for _ in range(iters):
        d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        assign = d.argmin(1)
        for c in range(len(centres)):
            sel = x[assign == c]
            if len(sel):
                centres[c] = sel.mean(0)
    return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


def colour_components(image: np.ndarray, k: int = 6, iters: int = 10, work_size: int = 64,
                      min_area_frac: float = 0.002, max_area_frac: float = 0.5,
                      seed: int = 0, top_k: int = 100) -> list[tuple[np.ndarray, float]]:
    """Connected components of a k-means colour clustering.

    Scored by compactness (area / box area), so blob-like regions rank first; regions
    larger than `max_area_frac` of the image (background) are dropped.
    """
    h, w = image.shape[:2]
    s = work_size / max(h, w)
    small = resize(image, (max(1, round(h * s)), max(1, round(w * s))), anti_aliasing=True)
    rng = np.random.default_rng(seed)
    labels = _kmeans(small.reshape(-1, 3).astype(np.float64), k, iters, rng).reshape(
        small.shape[:2])
    out = []
    for c in np.unique(labels):
        comps = connected_components(labels == c, connectivity=1)
        for i in range(1, comps.max() + 1):
            m_small = comps == i
            frac = m_small.mean()
            if frac < min_area_frac or frac > max_area_frac:
                continue
            m = resize(m_small.astype(np.float32), (h, w), order=1) >= 0.5
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            out.append((m, float(m.sum() / box)))
    out.sort(key=lambda t: -t[1])
    return out[:top_k]


BASELINES = {"whole_image": whole_image, "colour_components": colour_components}
