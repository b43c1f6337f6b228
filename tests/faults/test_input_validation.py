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
    # issue 34: NaN grew evaluation to 22 GB until the kernel killed it; Infinity segfaulted
    "NaN in a polygon": (lambda d: d["annotations"][0].update(
        segmentation=[[1, 1, float("nan"), 5, 6, 1]]), "annotation 7 .*not a finite number"),
    "Infinity in a polygon": (lambda d: d["annotations"][0].update(
        segmentation=[[1, 1, float("inf"), 5, 6, 1]]), "annotation 7 .*not a finite number"),
    # AP silently became 69.3 instead of 100
    "duplicate annotation ids": (lambda d: d["annotations"].append(
        dict(d["annotations"][0], bbox=[0, 0, 2, 2])), "annotation id 7 appears twice"),
    # box AP silently dropped to 83
    "negative bbox size": (lambda d: d["annotations"][0].update(bbox=[3, 2, -4, 3]),
                           "annotation 7 .*bbox of negative size -4x3"),
    "NaN bbox": (lambda d: d["annotations"][0].update(bbox=[3, 2, float("nan"), 3]),
                 "annotation 7 .*not 4 finite numbers"),
    "negative area": (lambda d: d["annotations"][0].update(area=-1), "annotation 7 .*area -1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_broken_coco_files_fail_at_load_in_one_line(tmp_path, case):
    mutate, message = BAD[case]
    f = _coco(tmp_path, mutate)
    with pytest.raises(UserError, match=message) as e:
        load_coco(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("missing", ["bbox", "area", "both"])
def test_missing_bbox_or_area_is_filled_from_the_mask_and_evaluates(tmp_path, missing):
    """pycocotools raised KeyError after all the prediction work (issue 34)."""
    from pipeline.eval.coco_eval import evaluate

    def drop(d):
        d["images"].append({"id": 2, "file_name": "b.png", "height": 10, "width": 12})
        d["annotations"].append({"id": 8, "image_id": 2, "category_id": 1, "iscrowd": 0,
                                 "bbox": [1, 1, 6, 5], "area": 30.0,
                                 "segmentation": [[1, 1, 7, 1, 7, 6, 1, 6]]})
        for a in d["annotations"]:
            for k in (("bbox", "area") if missing == "both" else (missing,)):
                a.pop(k)
    gt = load_coco(_coco(tmp_path, drop))
    assert [a["bbox"] for a in gt["annotations"]] == [[3.0, 2.0, 4.0, 3.0], [1.0, 1.0, 6.0, 5.0]]
    assert gt["annotations"][0]["area"] == 12.0 and gt["annotations"][1]["area"] > 0
    preds = [dict(a, score=1.0) for a in gt["annotations"]]
    m = evaluate(gt, preds, image_ids=[1, 2])
    assert m["segm"]["AP"] == pytest.approx(100.0) and m["bbox"]["AP"] == pytest.approx(100.0)


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
    # issue 34: tracebacks (some after the model was built) or silently accepted
    ("hardware.threads=-1", "hardware.threads=-1 is out of range: it must be an integer >= 0"),
    ("freemask.shard_size=null", "freemask.shard_size=null is not allowed"),
    ("seed=abc", "seed='abc' is out of range: it must be an integer >= 0"),
    ("freemask.maskcut.tau=abc", "freemask.maskcut.tau='abc' .* a number >= 0 and <= 1"),
    ("maskrcnn.train.ckpt_every=0", "maskrcnn.train.ckpt_every=0 .* integer >= 1"),
    ("maskrcnn.train.log_every=0", "maskrcnn.train.log_every=0 .* integer >= 1"),
    ("strict=maybe", "strict='maybe' .* true or false"),
    ("strict=no", "strict='no' .* true or false"),
    ("freemask.guided_eps=-1", "freemask.guided_eps=-1 .* a number > 0"),
    (r"maskrcnn.train.sizes=[0]", r"maskrcnn.train.sizes=\[0\] .* integer >= 1"),
    ("solo.train.lr=null", "solo.train.lr=null is not allowed"),
    ("progress=1", "progress=1 .* true or false"),
])
def test_settings_out_of_range_fail_before_any_work(sample_cfg, override, message):
    cfg = sample_cfg("stage=baseline", override)
    with pytest.raises(UserError, match=message):
        run_stage(cfg)
    assert not Path(cfg.run_dir).exists()  # refused before the output folder was made


def test_every_numeric_and_boolean_setting_has_a_rule():
    """A setting outside the table skips every check (issue 34: tracebacks after the model
    was built, `strict=no` read as true): each numeric or boolean leaf of the composed
    configs has a rule, and the defaults pass it."""
    import itertools
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict
    from pipeline.config_checks import _keys, check, rule_for
    from tests.conftest import CONF
    uncovered = set()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for exp, sv, hw in itertools.product(["cpu_sample", "coco_r50"],
                                             ["full", "points", "free_masks", "solo"],
                                             ["cpu", "gpu"]):
            cfg = compose("config", overrides=[f"experiment={exp}", f"supervision={sv}",
                                               f"hardware={hw}"])
            with open_dict(cfg):
                cfg.run_dir = "x"
            check(cfg)
            for k in _keys(cfg):
                v = OmegaConf.select(cfg, k, throw_on_missing=False)
                v = OmegaConf.to_container(v) if OmegaConf.is_list(v) else v
                numeric = isinstance(v, (bool, int, float)) or (
                    isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v))
                if numeric and rule_for(k) is None:
                    uncovered.add(k)
    assert not uncovered


def test_an_image_just_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    """9500 x 9500 (just over PIL's limit; only twice the limit was refused) used to be
    decoded at 1.6 GB; the message names the setting that raises the limit."""
    from pipeline.data.images import set_max_pixels
    _png_header(tmp_path / "big.png", 9500, 9500)
    with pytest.raises(ImageReadError, match=r"9500x9500 = 90250000, over "
                                             r"max_image_pixels=89478485 .*set "
                                             r"max_image_pixels=90250000 if it is real"):
        read_rgb(tmp_path / "big.png")
    try:
        set_max_pixels(100_000_000)  # raised: the header passes, the (broken) data is decoded
        with pytest.raises(ImageReadError, match="cannot decode"):
            read_rgb(tmp_path / "big.png")
    finally:
        set_max_pixels(None)


@pytest.mark.parametrize("top, scale", [(200, 255), (3000, 4095), (4095, 4095), (60000, 65535)])
def test_high_bit_depth_grayscale_is_scaled_by_its_bit_depth(tmp_path, top, scale):
    """Values <= 200 in a 16-bit PNG read as black (divided by 65535); now each image is
    scaled by the smallest usual bit depth (8, 10, 12, 14, 16) that holds its values."""
    ramp = np.linspace(0, top, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "g.png")  # a 16-bit grayscale PNG (mode I;16)
    arr = read_rgb(tmp_path / "g.png")[..., 0].flatten()
    expected = (ramp.flatten() / scale * 255).astype(np.uint8)
    assert np.abs(arr.astype(int) - expected).max() <= 1
    assert arr.max() >= 180  # not black


def test_strict_run_stops_at_a_dangling_link(tmp_path, sample_cfg):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(folder / "ok.png")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    cfg = sample_cfg("stage=baseline", "dataset=folder", f"dataset.images={folder}",
                     "baseline.methods=[threshold_components]", "baseline.splits=[images]",
                     "overlays=0", "strict=true")
    with pytest.raises(UserError, match=r"dangling.png: link target missing \(strict=true"):
        run_stage(cfg)
