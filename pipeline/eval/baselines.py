"""What "no learning" scores: the mask proposals a user would try first, in every table.

Each baseline maps an HxWx3 uint8 image to [(HxW bool mask, score), ...].
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.feature import peak_local_max
from skimage.filters import threshold_local, threshold_otsu
from skimage.measure import label as connected_components
from skimage.segmentation import watershed as skimage_watershed
from skimage.transform import resize


def whole_image(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """One mask covering the whole image."""
    return [(np.ones(image.shape[:2], bool), 1.0)]


def _compactness(m: np.ndarray) -> float:
    ys, xs = np.nonzero(m)
    return float(m.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))


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
            if m.any():
                out.append((m, _compactness(m)))
    out.sort(key=lambda t: -t[1])
    return out[:top_k]


def _foreground(image: np.ndarray, local_block: float = 0.0) -> np.ndarray:
    """Otsu's threshold on the grey image (or a local threshold over blocks of
    `local_block` x the image size); the foreground is the minority side, since objects
    rarely cover most of a photograph."""
    grey = rgb2gray(image) if image.ndim == 3 else image.astype(float)
    if np.ptp(grey) == 0:
        return np.zeros(grey.shape, bool)
    if local_block:
        block = max(3, int(local_block * min(grey.shape)) | 1)
        fg = grey > threshold_local(grey, block)
    else:
        fg = grey > threshold_otsu(grey)
    if fg.mean() > 0.5:
        fg = ~fg
    return ndi.binary_fill_holes(ndi.binary_opening(fg, iterations=1))


def _components(labels: np.ndarray, min_area_frac: float, max_area_frac: float, top_k: int):
    n = labels.size
    sizes = np.bincount(labels.ravel())
    keep = np.flatnonzero((sizes >= min_area_frac * n) & (sizes <= max_area_frac * n))
    out = [(m, _compactness(m)) for m in (labels == i for i in keep if i)]
    out.sort(key=lambda t: -t[1])
    return out[:top_k]


def threshold_components(image: np.ndarray, local_block: float = 0.0,
                         min_area_frac: float = 0.001, max_area_frac: float = 0.5,
                         top_k: int = 100) -> list[tuple[np.ndarray, float]]:
    """Connected components of the thresholded image (Otsu, or local with local_block > 0),
    holes filled, scored by compactness."""
    labels = connected_components(_foreground(image, local_block), connectivity=2)
    return _components(labels, min_area_frac, max_area_frac, top_k)


def watershed_split(image: np.ndarray, local_block: float = 0.0, min_distance_frac: float = 0.03,
                    min_area_frac: float = 0.001, max_area_frac: float = 0.5,
                    top_k: int = 100) -> list[tuple[np.ndarray, float]]:
    """Thresholded foreground split into touching blobs by a watershed on the distance
    transform, one marker per distance peak (the textbook recipe for touching objects)."""
    fg = _foreground(image, local_block)
    if not fg.any():
        return []
    dist = ndi.distance_transform_edt(fg)
    min_distance = max(2, int(min_distance_frac * min(fg.shape)))
    peaks = peak_local_max(dist, min_distance=min_distance, labels=connected_components(fg))
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = skimage_watershed(-dist, markers, mask=fg)
    return _components(labels, min_area_frac, max_area_frac, top_k)



