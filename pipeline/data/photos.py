"""Real photographs that ship inside scikit-image (no ground truth): what the pipeline makes of
a real photo, for anyone to look at (README). Written as PNGs on first use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io import write_with

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
            write_with(path, lambda f, a=arr: Image.fromarray(a).save(f, "PNG"))
        out.append(path)
    return out
