"""Bad input is caught when it is loaded, in one line naming the file and the fix (issue 11)."""
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.__main__ import run_stage
from pipeline.data.coco import encode_mask, load_coco
from pipeline.data.coco_checks import rle_counts, rle_sums
from pipeline.data.images import ImageReadError, read_rgb, scan_images
from pipeline.errors import UserError


def _png_header(path: Path, w: int, h: int) -> None:
    """A PNG whose header declares w x h pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_an_unreadable_image_not_a_crash(tmp_path):
    _png_header(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_rgb(tmp_path / "bomb.png")


def test_bomb_in_a_folder_is_skipped_and_listed(tmp_path, sample_cfg):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(folder / "ok.png")
    _png_header(folder / "bomb.png", 30000, 30000)
    (folder / "notes.txt").write_text("not an image")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    os.symlink(folder / "loop_b", folder / "loop_a")
    os.symlink(folder / "loop_a", folder / "loop_b")
    cfg = sample_cfg("stage=baseline", "dataset=folder", f"dataset.images={folder}",
                     "baseline.methods=[threshold_components]", "baseline.splits=[images]",
                     "overlays=0")
    run_stage(cfg)
    skipped = json.loads((Path(cfg.run_dir) / "threshold_components" / "skipped.json")
                         .read_text())["images"]
    reasons = {s["file_name"]: s["reason"] for s in skipped}
    assert set(reasons) == {"bomb.png", "notes.txt", "dangling.png", "loop_a", "loop_b"}
    assert "too many pixels" in reasons["bomb.png"]
    assert reasons["loop_a"] == "symbolic link loop"
    assert reasons["dangling.png"] == "link target missing"


def test_scan_lists_what_it_leaves_out(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.gif").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    files, left = scan_images(tmp_path)
    assert files == ["a.png"] and [r["file_name"] for r in left] == ["b.gif"]


def _coco(tmp_path, mutate) -> Path:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:7] = True
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [3, 2, 4, 3], "area": 12.0,
                             "segmentation": encode_mask(m)}],
            "categories": [{"id": 1, "name": "object"}]}
    mutate(data)
    f = tmp_path / "instances.json"
    f.write_text(json.dumps(data))
    return f


BAD = {
    "polygon of 2 points": (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
                            "annotation 7 .*fewer than 3 points"),
    "odd polygon": (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5, 6]]),
                    "annotation 7 .*odd number of coordinates"),
    "garbage RLE": (lambda d: d["annotations"][0]["segmentation"].update(counts="zz~~zz"),
                    "annotation 7 .*do not decode"),
    "RLE runs too long": (lambda d: d["annotations"][0]["segmentation"].update(
        counts=encode_mask(np.ones((20, 20), bool))["counts"]), "annotation 7 .*covering 400"),
    "RLE of another size": (lambda d: d["images"][0].update(height=20),
                            "annotation 7 .*RLE of size 10x12 on an image of 20x12"),
    "bbox only": (lambda d: d["annotations"][0].pop("segmentation"),
                  "annotation 7 has no segmentation \\(bbox only\\)"),
    "no file_name": (lambda d: d["images"][0].pop("file_name"), "image 1 has no 'file_name'"),
    "images as a dict": (lambda d: d.update(images={"1": {}}), "'images' is a dict"),
    "null annotation": (lambda d: d["annotations"].append(None), "annotation #1 is None"),
    "unknown category": (lambda d: d["annotations"][0].update(category_id=5),
                         "category_id 5, which is not in 'categories'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_broken_coco_files_fail_at_load_in_one_line(tmp_path, case):
    mutate, message = BAD[case]
    f = _coco(tmp_path, mutate)
    with pytest.raises(UserError, match=message) as e:
        load_coco(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_a_good_file_loads_and_rle_runs_match_pycocotools(tmp_path):
    assert load_coco(_coco(tmp_path, lambda d: None))["annotations"][0]["id"] == 7
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < 0.3
        flat = m.flatten(order="F").astype(int)
        edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        runs = ([0] if flat[0] else []) + np.diff(edges).tolist()
        assert rle_counts(encode_mask(m)["counts"]).tolist() == runs


def test_many_rles_checked_at_once_agree_with_one_by_one():
    """The vectorised check (COCO-size files) finds what the per-string decoder finds."""
    rng = np.random.default_rng(1)
    good = [encode_mask(rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < p)
            ["counts"] for p in rng.random(200)]
    bad = ["0", "0" + chr(47), "a" + "P", "0" + "P" * 13 + "1", "1O"]  # stray char, open end,
    counts = good[:100] + bad + [""] + good[100:]      # too long, negative run; "" is empty
    sums, ok = rle_sums(counts)
    for s, o, c in zip(sums, ok, counts):
        try:
            runs = rle_counts(c)
        except ValueError:
            assert not o, c
            continue
        assert o == bool((runs >= 0).all()), c
        if o:
            assert s == runs.sum(), c
    assert ok[:100].all() and ok[106:].all() and not ok[101:105].any()


@pytest.mark.parametrize("override, message", [
    ("freemask.batch_size=0", "freemask.batch_size=0 is out of range: it must be an integer >= 1"),
    ("freemask.shard_size=0", "freemask.shard_size=0 is out of range"),
    ("freemask.feature_level=res9", "feature_level='res9' .* one of res2, res3, res4, res5"),
    ("baseline.options.colour_components.k=0", "colour_components.k=0 .* integer >= 2"),
    ("points.n=-1", "points.n=-1 is out of range"),
    ("solo.inference.score_threshold=-0.5", "score_threshold=-0.5 .* >= 0 and <= 1"),
    ("pretrain.augment=gpu", "pretrain.augment='gpu' is out of range"),
    ("hardware.loader_workers=-1", "hardware.loader_workers=-1 is out of range"),
    ("solo.train.ema=1.0", "solo.train.ema=1.0 is out of range"),  # would never move
    ("solo.self_training.iter_fraction=0", "iter_fraction=0 .* > 0 and <= 1"),
    ("maskrcnn.train.scale_jitter=[1.5,0.5]", r"scale_jitter=\[1.5, 0.5\] .* 0 < lo <= hi"),
    ("solo.train.scale_jitter=[0,1]", r"solo.train.scale_jitter=.* 0 < lo <= hi"),
    ("maskrcnn.inference.guided_radius_px=-2", "guided_radius_px=-2 is out of range"),
    ("sparseinst.inference.guided_radius_px=2.5", "guided_radius_px=2.5 .* integer >= 0"),
])
def test_settings_out_of_range_fail_before_any_work(sample_cfg, override, message):
    cfg = sample_cfg("stage=baseline", override)
    with pytest.raises(UserError, match=message):
        run_stage(cfg)
    assert not Path(cfg.run_dir).exists()  # refused before the output folder was made
