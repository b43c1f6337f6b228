"""The free-mask stage on real files: outputs, bad input, resume after kill -9."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from pipeline.__main__ import run_stage
from pipeline.data.coco import load_coco
from pipeline.errors import UserError
from pipeline.models.free_mask_predictor import FreeMaskPredictor
from tests.conftest import ROOT, cli_env, kill_9_when, make_cfg, pipeline_cmd

FAST = ["backbone.weights=null", "freemask.short_side=128", "freemask.max_size=256",
        "freemask.shard_size=4", "freemask.batch_size=4", "overlays=2"]


@pytest.mark.parametrize("method", ["maskcut", "freesolo"])   # maskcut: the experiment's
def test_outputs_on_sample(sample_cfg, method):
    cfg = sample_cfg("stage=freemask", *FAST, f"freemask.method={method}")
    res = run_stage(cfg)
    run = Path(cfg.run_dir)
    for split, n in (("train", 8), ("val", 4)):
        api = COCO(str(run / f"free_masks_{split}.json"))  # pycocotools reads it
        assert len(api.getImgIds()) == n
        anns = api.loadAnns(api.getAnnIds())
        assert anns, "no free masks at all"
        a = anns[0]
        assert {"score", "bbox", "area"} <= set(a) and "embedding" not in a  # a small JSON
        embedded = load_coco(run / f"free_masks_{split}.json")["annotations"]
        assert all(len(e["embedding"]) == 128 for e in embedded)   # kept beside it
        # every mask passed its method's score filter (FreeSOLO: maskness; MaskCut: the
        # boundary contrast of its cut)
        if method == "freesolo":
            assert min(x["maskness"] for x in anns) >= cfg.freemask.freesolo.min_maskness
            assert all(x["score"] <= x["maskness"] + 1e-6 for x in anns)  # NMS only decays
        else:
            assert cfg.freemask.method == "maskcut" and "maskness" not in a
            assert all(cfg.freemask.maskcut.min_score <= x["score"] <= 1 for x in anns)
        assert api.annToMask(a).sum() == a["area"]
        assert res[split]["metrics"]["segm"].keys() >= {"AP", "AP50", "AR100"}
    metrics = json.loads((run / "metrics.json").read_text())
    # train + the dataset's eval_splits, and the attempt that wrote them
    assert set(metrics) == {"train", "val", "test", "attempt"}
    assert len(list((run / "overlays" / "val").glob("*.png"))) == 2


def test_detectron2_style_loading(sample_cfg):
    """What detectron2's load_coco_json relies on: ids, file names, RLE with str counts."""
    cfg = sample_cfg("stage=freemask", *FAST, "freemask.splits=[val]")
    run_stage(cfg)
    data = json.loads((Path(cfg.run_dir) / "free_masks_val.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert all(isinstance(a["segmentation"]["counts"], str) for a in data["annotations"])
    assert all(a["iscrowd"] == 0 for a in data["annotations"])


def make_bad_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "good.jpg", quality=90)
    Image.fromarray(rgb[..., 0]).save(root / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((64, 80), 200, np.uint8)])).save(root / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(root / "deep16.png")
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(root / "rotated.jpg", exif=exif)
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.png").write_bytes(b"")
    return root


def test_bad_images_are_skipped_and_listed(tmp_path, sample_cfg):
    folder = make_bad_folder(tmp_path / "imgs")
    cfg = sample_cfg("stage=freemask", "dataset=folder", f"dataset.images={folder}", *FAST,
                     "freemask.splits=[images]")
    res = run_stage(cfg)
    skipped = json.loads((Path(cfg.run_dir) / "skipped.json").read_text())["images"]
    assert sorted(s["file_name"] for s in skipped) == ["empty.png", "truncated.jpg"]
    assert res["images"]["images"] == 5 and res["images"]["skipped"] == 2
    out = json.loads((Path(cfg.run_dir) / "free_masks_images.json").read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in out["images"]}
    assert sizes["rotated.jpg"] == (64, 80) and sizes["good.jpg"] == (80, 64)


def test_strict_makes_bad_image_fatal(tmp_path, sample_cfg):
    folder = make_bad_folder(tmp_path / "imgs")
    cfg = sample_cfg("stage=freemask", "dataset=folder", f"dataset.images={folder}", *FAST,
                     "freemask.splits=[images]", "strict=true")
    with pytest.raises(UserError, match=r"(empty\.png|truncated\.jpg).*strict=false"):
        run_stage(cfg)


def test_empty_folder_and_missing_checkpoint(tmp_path, sample_cfg):
    (tmp_path / "none").mkdir()
    cfg = sample_cfg("stage=freemask", "dataset=folder", f"dataset.images={tmp_path / 'none'}",
                     *FAST, "freemask.splits=[images]")
    with pytest.raises(UserError, match="no images in .*none"):
        run_stage(cfg)
    cfg = sample_cfg("stage=freemask", *FAST, f"backbone.weights={tmp_path / 'missing.pt'}")
    with pytest.raises(UserError, match="missing.pt.*pretrain"):
        run_stage(cfg)


def test_rerun_skips_finished_shards_and_config_change_redoes(sample_cfg, monkeypatch):
    cfg = sample_cfg("stage=freemask", *FAST, "freemask.splits=[train]",
                     "freemask.eval_splits=[]")
    run_stage(cfg)
    out = Path(cfg.run_dir) / "free_masks_train.json"
    first = out.read_bytes()
    calls = []
    from pipeline.stages import freemask
    orig = freemask.FreeMaskPredictor.__call__
    monkeypatch.setattr(freemask.FreeMaskPredictor, "__call__",
                        lambda self, items: calls.append(len(items)) or orig(self, items))
    run_stage(cfg)
    assert calls == [] and out.read_bytes() == first
    cfg2 = sample_cfg("stage=freemask", *FAST, "freemask.splits=[train]",
                      "freemask.eval_splits=[]", "freemask.maskcut.max_objects=3")
    run_stage(cfg2)
    assert sum(calls) == 8  # all shards redone under the new configuration
    counts = {}
    for a in json.loads(out.read_text())["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    assert max(counts.values()) <= 3


@pytest.mark.e2e
def test_resume_after_kill_9_gives_identical_output(tmp_path, tiny_sample):
    common = pipeline_cmd("stage=freemask", f"paths.data_dir={tiny_sample}",
                          "dataset.generate.num.train=8", "dataset.generate.num.val=4",
                          "dataset.generate.num.test=4", *FAST,
                          "freemask.shard_size=1", "freemask.batch_size=1",
                          "freemask.splits=[train]", "progress=false", "overlays=0")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(common + [f"paths.output_dir={ref}"], check=True, env=cli_env(), cwd=ROOT,
                   capture_output=True)
    shards = killed / "cpu_sample" / "freemask" / "shards" / "train"
    kill_9_when(common + [f"paths.output_dir={killed}"],
                lambda: len(list(shards.glob("shard_*.json"))) >= 3, timeout=120)
    done = len(list(shards.glob("shard_*.json")))
    assert 3 <= done < 8, f"kill came too late or too early ({done} shards)"
    final = killed / "cpu_sample" / "freemask" / "free_masks_train.json"
    assert not final.exists()
    subprocess.run(common + [f"paths.output_dir={killed}"], check=True, env=cli_env(), cwd=ROOT,
                   capture_output=True)
    want = json.loads((ref / "cpu_sample" / "freemask" / "free_masks_train.json").read_text())
    got = json.loads(final.read_text())
    assert got == want


class ZeroPaddedBackbone(torch.nn.Module):
    """What makes the border artefact, and nothing else: a stride-16 layer that pads with
    zeros on the left only (learned kernels are not symmetric), so the cells along that edge
    get a feature direction of their own, beside an intensity channel that sees the object."""

    def forward(self, x, up_to="res5"):
        pool = torch.nn.functional.avg_pool2d
        grey = pool(x.mean(1, keepdim=True), 16, stride=16, ceil_mode=True)
        ones = torch.ones_like(grey)
        seen = pool(torch.nn.functional.pad(ones, (1, 0, 0, 0)), (1, 2), stride=1)  # 0.5 at left
        return {"res4": torch.cat([10 * (1 - seen), grey.clamp(min=0), ones], 1)}


def is_border_strip(ann, h, w, frac=0.12):
    """A mask box along an image edge: touching it, thinner than `frac` of the image across
    it and at least 3x longer along it."""
    x, y, bw, bh = ann["bbox"]
    along_side = (x <= 0 or x + bw >= w) and bw <= frac * w and bh >= 3 * bw
    along_top_bottom = (y <= 0 or y + bh >= h) and bh <= frac * h and bw >= 3 * bh
    return along_side or along_top_bottom


@pytest.mark.parametrize("method", ["freesolo", "maskcut"])
def test_plain_image_gives_no_border_strip(tmp_path, method):
    """A plain image with one planted object: no mask may be a strip along an edge. With the
    padding fix and the strip filter both off, the same backbone does make strips."""
    img = np.full((160, 160, 3), 120, np.uint8)
    img[60:100, 50:110] = 230

    def predict(*overrides):
        cfg = make_cfg(tmp_path, f"freemask.method={method}", "freemask.freesolo.min_maskness=0.5",
                       "freemask.maskcut.tau=0.99", "freemask.maskcut.max_objects=4",
                       "freemask.maskcut.feature_weight=1", "freemask.maskcut.colour_weight=0",
                       *overrides)
        pred = FreeMaskPredictor(ZeroPaddedBackbone(), cfg.freemask, "cpu")
        return pred([({"id": 1}, img)])[0]

    for fix in ([], ["freemask.max_border_frac=1"], ["freemask.border_pad=0"]):  # both, each
        anns = predict(*fix)
        assert anns, "the planted object should be found"
        assert not [a["bbox"] for a in anns if is_border_strip(a, 160, 160)], fix
    old = predict("freemask.border_pad=0", "freemask.max_border_frac=1")
    assert [a for a in old if is_border_strip(a, 160, 160)], "the artefact is not reproduced"


def test_nms_decayed_filter_removes_planted_duplicates(tmp_path):
    """One object: every query inside it gives the same mask. Filtering on the raw maskness
    keeps the duplicates (Matrix NMS only re-ranks); filtering on the decayed score, as
    FreeSOLO's released code does, removes them."""
    img = np.full((160, 160, 3), 120, np.uint8)
    img[60:100, 50:110] = 230

    def predict(rule):
        cfg = make_cfg(tmp_path, "freemask.method=freesolo", f"freemask.freesolo.filter_score={rule}")
        return FreeMaskPredictor(ZeroPaddedBackbone(), cfg.freemask, "cpu")([({"id": 1}, img)])[0]

    raw, decayed = predict("raw"), predict("decayed")
    assert len(raw) >= 10 and {tuple(a["bbox"]) for a in raw} == {(50.0, 60.0, 60.0, 40.0)}
    assert 1 <= len(decayed) <= 2 and decayed[0]["bbox"] == [50.0, 60.0, 60.0, 40.0]
    assert all(a["score"] >= 0.7 for a in decayed)


def test_centre_filter_uses_the_row_projection():
    from pipeline.models.free_mask_predictor import row_projection_centres
    m = np.zeros((10, 10), bool)
    m[0:2, :] = True          # a heavy band on top (20 pixels in 2 rows)
    m[2:10, 4] = True         # a thin stem down to the bottom (8 pixels in 8 rows)
    low = np.zeros((10, 10), bool)
    low[7:9, 2:5] = True      # a second mask of the batch: rows 7 and 8
    centres = row_projection_centres(torch.from_numpy(np.stack([m, low])))
    assert centres.tolist() == [4.5, 7.5]                    # rows 0..9, each once
    assert np.nonzero(m)[0].mean() < 3                        # the centre of mass sits high
