"""A rerun never reports results made from other inputs (issue 11: wrong results, exit 0).

Each test reproduces a case that used to pass silently with the old results."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.__main__ import run_stage
from pipeline.data.datasets import Split
from pipeline.errors import UserError
from pipeline.io import read_json
from pipeline.sharded import run_sharded


def _folder(path: Path, values: dict[str, int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, v in values.items():
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(path / name)
    return path


def _split(root: Path) -> Split:
    images = [{"id": i, "file_name": f} for i, f in enumerate(sorted(os.listdir(root)), 1)]
    return Split("images", root, {"images": images, "annotations": []}, has_gt=False)


class MeanPredictor:
    """One box-shaped 'mask' per image whose score is the image's mean: shows which pixels
    a result was computed from."""

    def __init__(self):
        self.calls = 0

    def __call__(self, items):
        from pipeline.data.coco import mask_to_annotation
        self.calls += len(items)
        return [[mask_to_annotation(np.ones(a.shape[:2], bool), info["id"], 1,
                                    score=float(a.mean()))] for info, a in items]


def _scores(coco) -> list[float]:
    return [a["score"] for a in coco["annotations"]]


def _run(split, work, predictor, **kw):
    kw.setdefault("shard_size", 2)
    return run_sharded(split, predictor, work / "out.json", work / "shards", config_key=["k"],
                       workers=1, progress=False, **kw)


def test_other_folder_with_the_same_file_names_is_predicted_again(tmp_path):
    a = _folder(tmp_path / "a", {"x.png": 10, "y.png": 20, "z.png": 30})
    b = _folder(tmp_path / "b", {"x.png": 90, "y.png": 80, "z.png": 70})
    p = MeanPredictor()
    assert _scores(_run(_split(a), tmp_path, p)[0]) == [10, 20, 30]
    assert _scores(_run(_split(b), tmp_path, p)[0]) == [90, 80, 70]
    assert p.calls == 6


def test_image_repaired_in_place_is_no_longer_skipped(tmp_path):
    a = _folder(tmp_path / "a", {"x.png": 10, "y.png": 20, "z.png": 30})
    (a / "y.png").write_bytes(b"truncated")
    coco, skipped = _run(_split(a), tmp_path, MeanPredictor())
    assert [s["file_name"] for s in skipped] == ["y.png"] and _scores(coco) == [10, 30]
    _folder(a, {"y.png": 20})
    p = MeanPredictor()
    coco, skipped = _run(_split(a), tmp_path, p)
    assert skipped == [] and _scores(coco) == [10, 20, 30]
    assert p.calls == 2  # only the shard holding the repaired image; the other is reused


def test_strict_rerun_after_lenient_run_refuses_the_broken_image(tmp_path):
    a = _folder(tmp_path / "a", {"x.png": 10, "y.png": 20})
    (a / "y.png").write_bytes(b"")
    _run(_split(a), tmp_path, MeanPredictor())
    with pytest.raises(UserError, match="y.png.*strict=true"):
        _run(_split(a), tmp_path, MeanPredictor(), strict=True)


def test_unchanged_rerun_and_a_batching_change_reuse_every_shard(sample_cfg):
    cfg = sample_cfg("stage=baseline", "baseline.methods=[threshold_components]",
                     "baseline.splits=[val]", "baseline.shard_size=2", "overlays=0")
    run_stage(cfg)
    shards = Path(cfg.run_dir) / "threshold_components" / "shards" / "val"
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard_*.json")}
    assert len(before) == 2
    run_stage(sample_cfg("stage=baseline", "baseline.methods=[threshold_components]",
                         "baseline.splits=[val]", "baseline.shard_size=2", "overlays=0",
                         "hardware.workers=1"))
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard_*.json")} == before


def _tiny_maskrcnn(sample_cfg, *extra):
    return sample_cfg("stage=maskrcnn", "backbone.weights=null", "maskrcnn.train.max_iter=2",
                      "maskrcnn.train.batch_size=2", "maskrcnn.train.ckpt_every=1",
                      "maskrcnn.inference.short_side=160", "overlays=0", *extra,
                      run_name="maskrcnn")


@pytest.mark.e2e
def test_points_run_refuses_the_full_mask_model_in_its_folder(sample_cfg):
    full = _tiny_maskrcnn(sample_cfg, "supervision=full")
    run_stage(full)
    model = Path(full.run_dir) / "model.pt"
    made = model.read_bytes()
    with pytest.raises(UserError, match="model.pt holds weights made from other inputs"):
        run_stage(_tiny_maskrcnn(sample_cfg, "supervision=points"))
    assert model.read_bytes() == made  # refused before touching anything
    # only inference settings changed: the same weights are evaluated again, not retrained
    run_stage(_tiny_maskrcnn(sample_cfg, "supervision=full",
                             "maskrcnn.inference.score_threshold=0.5"))
    assert model.read_bytes() == made


def test_a_half_trained_checkpoint_is_not_resumed_under_other_settings(sample_cfg):
    cfg = _tiny_maskrcnn(sample_cfg, "supervision=full")
    run = Path(cfg.run_dir)
    from pipeline.provenance import guard
    from pipeline.stages.student import weights_fingerprint
    from pipeline.data.datasets import get_split
    from pipeline.stages.student import training_targets
    split = get_split(cfg.dataset, "train")
    key = weights_fingerprint(cfg, split, training_targets(cfg, split)[0])
    guard(run, key)
    (run / "last.pt").write_bytes(b"checkpoint of these inputs")
    guard(run, key)  # same inputs: resuming is allowed
    # zoom off keeps the fingerprint weights had before the key came; zoom on changes it
    from omegaconf import open_dict
    def zoomed(value):
        c = _tiny_maskrcnn(sample_cfg, "supervision=full", f"maskrcnn.train.scale_jitter={value}")
        return weights_fingerprint(c, split, training_targets(c, split)[0])
    no_key = _tiny_maskrcnn(sample_cfg, "supervision=full")
    with open_dict(no_key):
        del no_key.maskrcnn.train["scale_jitter"]
    off = weights_fingerprint(no_key, split, training_targets(no_key, split)[0])
    assert zoomed("[1,1]") == off and zoomed("[0.5,1.5]") != off
    other = _tiny_maskrcnn(sample_cfg, "supervision=full", "maskrcnn.train.lr=0.5")
    assert weights_fingerprint(other, split, training_targets(other, split)[0]) != key
    with pytest.raises(UserError, match="last.pt holds weights made from other inputs.*delete"):
        run_stage(other)
    (run / "inputs.json").unlink()  # weights of unknown origin are refused too
    with pytest.raises(UserError, match="last.pt holds weights made from other inputs"):
        guard(run, key)


def test_pretrained_backbone_of_other_images_is_refused(tiny_sample, tmp_path):
    from tests.conftest import TINY_SAMPLE, copy_tree, make_cfg
    data = copy_tree(tiny_sample, tmp_path / "data")
    cfg = make_cfg(tmp_path, f"paths.data_dir={data}", *TINY_SAMPLE, "stage=pretrain",
                   "pretrain.max_iter=1", "pretrain.batch_size=2", "pretrain.queue_size=8",
                   "pretrain.crop_size=32", "pretrain.hidden=32", "pretrain.dim=8",
                   run_name="pretrain")
    run_stage(cfg)
    backbone = Path(cfg.run_dir) / "backbone.pt"
    made = backbone.read_bytes()
    run_stage(cfg)  # same inputs: reused
    img = data / "sample" / "train" / "train_00000.png"
    Image.open(img).transpose(Image.FLIP_LEFT_RIGHT).save(img)  # an image changes in place
    with pytest.raises(UserError, match="backbone.pt holds a backbone made from other"):
        run_stage(cfg)
    assert backbone.read_bytes() == made


@pytest.mark.e2e
def test_sweep_over_other_images_in_the_same_folder_is_not_reported_finished(tiny_sample,
                                                                             tmp_path):
    """The old sweep skipped a job folder it had finished, whatever the data (measured: the
    old AP reported for another dataset). paths.data_dir is not in the job folder's name."""
    import subprocess
    from tests.conftest import ROOT, cli_env, copy_tree, pipeline_cmd
    other = copy_tree(tiny_sample, tmp_path / "other")
    for p in (other / "sample" / "val").glob("*.png"):
        a = np.asarray(Image.open(p))
        Image.fromarray(np.ascontiguousarray(255 - a)).save(p)  # other pixels, same names

    def sweep(data):
        r = subprocess.run(pipeline_cmd("-m", "stage=baseline", "hardware.workers=1,2",
                                        f"paths.data_dir={data}", "dataset.generate.num.train=8",
                                        "dataset.generate.num.val=4",
                                        "dataset.generate.num.test=4", "overlays=0",
                                        "baseline.methods=[threshold_components]",
                                        f"paths.output_dir={tmp_path / 'out'}"),
                           cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        job = next((tmp_path / "out" / "cpu_sample" / "multirun").glob("*hardware.workers=1"))
        return read_json(job / "threshold_components" / "threshold_components_val.json")

    first, second = sweep(tiny_sample), sweep(other)
    assert [a["segmentation"] for a in first["annotations"]] != \
        [a["segmentation"] for a in second["annotations"]]
