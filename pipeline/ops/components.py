"""Connected components of binary masks."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected piece of a (H, W) binary mask (ties: the first in raster
    order); an empty mask stays empty."""
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()
