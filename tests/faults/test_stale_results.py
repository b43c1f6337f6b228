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
    run = Path(full.run_dir)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="model.pt holds weights made from other inputs"):
        run_stage(_tiny_maskrcnn(sample_cfg, "supervision=points"))
    assert model.read_bytes() == made  # refused before touching anything
    # ... anything at all: config.yaml still the full run's, no points file, no error.txt;
    # only the refused attempt's own status file
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    new = sorted(str(p.relative_to(run)) for p in set(after) - set(before))
    assert new == ["attempts/0002.json"]
    assert all(after[p] == b for p, b in before.items() if p.name != ".lock")
    from pipeline.attempts import last_status
    assert last_status(run)["status"] == "refused"
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


# issue 34: an image replaced by another with the same size and mtime (cp -p, rsync, tar of
# same-size files such as uncompressed TIFF/BMP from one camera)

def _same_size_swap(path: Path, pixels: np.ndarray) -> None:
    """Overwrite `path` with other pixels of the same byte size and restore its mtime."""
    st = path.stat()
    fmt = "BMP" if path.suffix == ".bmp" else "PNG"
    Image.fromarray(pixels).save(path, format=fmt, **({"compress_level": 0} if fmt == "PNG"
                                                      else {}))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _bmp_folder(path: Path, values: dict[str, int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, v in values.items():
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(path / name)
    return path


def test_image_swapped_with_the_same_size_and_mtime_is_predicted_again(tmp_path):
    a = _bmp_folder(tmp_path / "a", {"x.bmp": 10, "y.bmp": 20, "z.bmp": 30})
    assert _scores(_run(_split(a), tmp_path, MeanPredictor())[0]) == [10, 20, 30]
    _same_size_swap(a / "y.bmp", np.full((8, 8, 3), 99, np.uint8))
    p = MeanPredictor()
    assert _scores(_run(_split(a), tmp_path, p)[0]) == [10, 99, 30]
    assert p.calls == 2  # the shard holding y.bmp, not the other


def test_unchanged_images_are_not_read_again_and_a_copy_elsewhere_is_the_same_input(tmp_path):
    import shutil
    from pipeline import identity
    a = _bmp_folder(tmp_path / "a", {"x.bmp": 10, "y.bmp": 20})
    reads = []
    real = identity._sha1
    try:
        identity._sha1 = lambda p: reads.append(Path(p).name) or real(p)  # counts file reads
        _run(_split(a), tmp_path, MeanPredictor())
        _run(_split(a), tmp_path, MeanPredictor())
        assert sorted(reads) == ["x.bmp", "y.bmp"]  # hashed once, then by size+mtime+inode+ctime
        b = tmp_path / "b"
        shutil.copytree(a, b)  # the same bytes under another folder: the same predictions
        p = MeanPredictor()
        _run(_split(b), tmp_path, p)
        assert p.calls == 0
    finally:
        identity._sha1 = real


def test_baseline_and_its_overlays_follow_a_same_size_same_mtime_swap(tmp_path, sample_cfg):
    folder = _bmp_folder(tmp_path / "imgs", {"a.bmp": 0})
    img = np.zeros((48, 48, 3), np.uint8)
    img[8:20, 8:20] = 255                                    # one square
    Image.fromarray(img).save(folder / "a.bmp")
    cfg = sample_cfg("stage=baseline", "dataset=folder", f"dataset.images={folder}",
                     "baseline.methods=[threshold_components]", "baseline.splits=[images]",
                     "overlays=1")
    out = Path(cfg.run_dir) / "threshold_components"
    run_stage(cfg)
    first = read_json(out / "threshold_components_images.json")["annotations"]
    drawn = (out / "overlays" / "images" / "a.png").read_bytes()
    two = np.zeros_like(img)
    two[8:20, 8:20] = 255
    two[28:40, 28:44] = 255                                  # two objects now
    _same_size_swap(folder / "a.bmp", two)
    run_stage(cfg)
    second = read_json(out / "threshold_components_images.json")["annotations"]
    assert len(second) == len(first) + 1
    assert (out / "overlays" / "images" / "a.png").read_bytes() != drawn


@pytest.mark.e2e
def test_weights_trained_on_swapped_images_are_refused(tiny_sample, tmp_path):
    from tests.conftest import TINY_SAMPLE, copy_tree, make_cfg
    data = copy_tree(tiny_sample, tmp_path / "data")
    train = sorted((data / "sample" / "train").glob("*.png"))
    for p in train:  # stored PNGs: every image of one size has one byte size
        Image.open(p).save(p, compress_level=0)

    def cfg():
        return make_cfg(tmp_path, f"paths.data_dir={data}", *TINY_SAMPLE, "stage=maskrcnn",
                        "backbone.weights=null", "maskrcnn.train.max_iter=1",
                        "maskrcnn.train.batch_size=2", "maskrcnn.inference.short_side=160",
                        "maskrcnn.eval_splits=[val]", "overlays=0", run_name="maskrcnn")
    run_stage(cfg())
    mirrored = np.ascontiguousarray(np.asarray(Image.open(train[0]).convert("RGB"))[:, ::-1])
    _same_size_swap(train[0], mirrored)
    with pytest.raises(UserError, match="model.pt holds weights made from other inputs"):
        run_stage(cfg())
