import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import ImageReadError, read_rgb, scan_images


def save(path, arr, mode=None, **kw):
    Image.fromarray(arr, mode=mode).save(path, **kw) if mode else Image.fromarray(arr).save(
        path, **kw)
    return path


def test_rgb_png(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out = read_rgb(save(tmp_path / "a.png", arr))
    assert np.array_equal(out, arr)


def test_grayscale_becomes_rgb(tmp_path):
    arr = np.full((10, 12), 77, np.uint8)
    out = read_rgb(save(tmp_path / "g.png", arr))
    assert out.shape == (10, 12, 3) and (out == 77).all()


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255
    arr[:2, :, 3] = 255      # top half opaque red, bottom half transparent
    out = read_rgb(save(tmp_path / "t.png", arr))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 0]) == (255, 255, 255)


def test_16bit_scaled_to_8bit(tmp_path):
    arr = np.full((6, 6), 65535, np.uint16)
    arr[0, 0] = 0
    p = tmp_path / "d.png"
    Image.fromarray(arr).save(p)
    out = read_rgb(p)
    assert out.dtype == np.uint8 and out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_exif_rotation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255                          # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6                           # "rotate 90 CW to display"
    p = tmp_path / "r.jpg"
    img.save(p, exif=exif, quality=95)
    out = read_rgb(p)
    assert out.shape == (20, 10, 3)            # upright: width and height swapped
    assert out[:5].mean() > 200 and out[-5:].mean() < 50   # left half is now on top


def test_truncated_image(tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    p = save(tmp_path / "full.jpg", arr, quality=90)
    data = p.read_bytes()
    q = tmp_path / "cut.jpg"
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_rgb(q)


def test_empty_and_garbage_and_missing(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_rgb(tmp_path / "zero.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="not a recognised image"):
        read_rgb(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="not found"):
        read_rgb(tmp_path / "missing.png")


def test_list_images_recursive_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["b/2.png", "1.JPG", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert scan_images(tmp_path)[0] == ["1.JPG", "b/2.png"]
