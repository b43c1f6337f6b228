"""Image reading that survives real folders: EXIF rotation, odd modes, broken files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class ImageReadError(Exception):
    """An image that cannot be decoded; carries the path and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: stretch to 8 bits by the type's range, not the image's,
        # so two images of the same scene keep the same brightness.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels usually mean "no content" in labeling data.
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_rgb(path) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array, upright according to EXIF.

    Raises ImageReadError (never a bare PIL error) for missing, empty, truncated or
    undecodable files, so callers can skip the image and report it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncation shows up here, not later
            img = ImageOps.exif_transpose(img)
            arr = _to_uint8_rgb(img)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as e:  # a header declaring billions of pixels
        raise ImageReadError(path, f"too many pixels to decode safely ({e}); shrink it or "
                                   f"raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"cannot decode ({e})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(path, f"unexpected decoded shape {arr.shape}")
    return arr


def list_images(folder) -> list[str]:
    """Image files under `folder`, recursively, as sorted paths relative to it."""
    return scan_images(folder)[0]


def scan_images(folder) -> tuple[list[str], list[dict]]:
    """(image files under `folder`, recursively, sorted and relative to it; the files left
    out and why: dangling links, link loops, other extensions). Hidden files are ignored."""
    folder = Path(folder)
    files, left_out = [], []
    for p in folder.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        rel = str(p.relative_to(folder))
        if p.is_symlink() and not p.exists():
            try:
                p.resolve(strict=True)
                reason = "link target missing"
            except RuntimeError:
                reason = "symbolic link loop"
            except OSError as e:
                reason = ("symbolic link loop" if e.errno == 40 else "link target missing")
            left_out.append({"image_id": None, "file_name": rel, "reason": reason})
        elif p.is_file():
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(rel)
            else:
                kinds = " ".join(sorted(IMAGE_EXTENSIONS))
                left_out.append({"image_id": None, "file_name": rel,
                                 "reason": f"extension {p.suffix or '(none)'} is not an image "
                                           f"type read here ({kinds})"})
    return sorted(files), sorted(left_out, key=lambda r: r["file_name"])
