"""Image reading that survives real folders: EXIF rotation, odd modes, broken files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit
_max_pixels = DEFAULT_MAX_PIXELS
# the limit is enforced here, on the header, before decoding: PIL's warning is noise
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def set_max_pixels(n) -> None:
    """The largest image decoded (setting `max_image_pixels`); larger ones are refused from
    their header, before any pixel is decoded. PIL's own check follows it."""
    global _max_pixels
    _max_pixels = int(n) if n else DEFAULT_MAX_PIXELS
    Image.MAX_IMAGE_PIXELS = _max_pixels


class ImageReadError(Exception):
    """An image that cannot be decoded; carries the path and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


def high_bit_scale(arr: np.ndarray, float_image: bool = False) -> float:
    """The value mapped to 255 for a grayscale image of more than 8 bits: the top of the
    smallest usual sensor bit depth (8, 10, 12, 14, 16, ...) that holds the image's largest
    value. 12-bit data in a 16-bit file (values <= 4095) is scaled by 4095, not 65535 (which
    read it as nearly black); two images of one camera share a bit depth, so they keep the
    same brightness unless one of them is very dark. Float images with values <= 1 are taken
    as [0, 1]."""
    top = float(np.nanmax(arr)) if arr.size else 0.0
    if float_image and top <= 1.0:
        return 1.0
    for bits in BIT_DEPTHS:
        if top <= 2 ** bits - 1:
            return float(2 ** bits - 1)
    return top


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: stretched to 8 bits by the bit depth the values use
        arr = np.asarray(img, dtype=np.float64)
        top = high_bit_scale(arr, float_image=img.mode == "F")
        arr = np.clip(np.nan_to_num(arr) / top * 255.0, 0, 255).astype(np.uint8)
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
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
            if w * h > _max_pixels:
                raise ImageReadError(path, f"too many pixels to decode safely: {w}x{h} = "
                                           f"{w * h}, over max_image_pixels={_max_pixels} (a guard against "
                                           f"decompression bombs); not decoded. Shrink it, or "
                                           f"set max_image_pixels={w * h} if it is real")
            img.load()  # decode now: truncation shows up here, not later
            img = ImageOps.exif_transpose(img)
            arr = _to_uint8_rgb(img)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError:  # PIL's check at open: over twice the limit
        raise ImageReadError(path, f"too many pixels to decode safely (over "
                                   f"max_image_pixels={_max_pixels}, a guard against "
                                   f"decompression bombs); shrink it, or raise "
                                   f"max_image_pixels if it is real") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"cannot decode ({e})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(path, f"unexpected decoded shape {arr.shape}")
    return arr


LINK_PROBLEMS = ("link target missing", "symbolic link loop")


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
                reason = LINK_PROBLEMS[0]
            except RuntimeError:
                reason = LINK_PROBLEMS[1]
            except OSError as e:
                reason = LINK_PROBLEMS[1] if e.errno == 40 else LINK_PROBLEMS[0]
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
