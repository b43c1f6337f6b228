"""Real photographs that ship inside scikit-image (no ground truth): what the pipeline makes of
a real photo, for anyone to look at (README). Written as PNGs on first use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def generate(root) -> list[Path]:
    from skimage import data
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name in NAMES:
        path = root / f"{name}.png"
        if not path.is_file():
            arr = np.asarray(getattr(data, name)())
            tmp = root / f".{name}.png.tmp"
            Image.fromarray(arr).save(tmp, "PNG")
            tmp.replace(path)
        out.append(path)
    return out
