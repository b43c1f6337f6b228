"""torchrun with two CPU processes (gloo): the DDP path of the shared training loop."""
import csv
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cli_env


@pytest.mark.e2e
def test_torchrun_two_processes_pretrain(tmp_path, tiny_sample):
    env = cli_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={29500 + os.getpid() % 1000}",
           "-m", "pipeline", "stage=pretrain", f"paths.data_dir={tiny_sample}",
           f"paths.output_dir={tmp_path}", "dataset.generate.num.train=8",
           "dataset.generate.num.val=4", "dataset.generate.num.test=4", "pretrain.max_iter=3",
           "pretrain.batch_size=2",
           "pretrain.queue_size=8", "pretrain.log_every=1", "progress=false"]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "cpu_sample" / "pretrain"
    assert (run / "backbone.pt").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(x["iteration"]) for x in rows] == [1, 2, 3]   # rank 0 alone writes


@pytest.mark.e2e
def test_torchrun_splits_prediction_shards_between_ranks(tmp_path, tiny_sample):
    """Each rank predicts every other shard; the merged file equals a single process's."""
    import json
    common = ["stage=freemask", f"paths.data_dir={tiny_sample}", "dataset.generate.num.train=8",
              "dataset.generate.num.val=4", "dataset.generate.num.test=4", "backbone.weights=null",
              "freemask.short_side=160", "freemask.max_size=200", "freemask.shard_size=1",
              "freemask.splits=[]", "freemask.eval_splits=[val]", "overlays=0",
              "progress=false"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={29500 + (os.getpid() + 7) % 1000}", "-m", "pipeline", *common,
           f"paths.output_dir={tmp_path / 'ddp'}"]
    r = subprocess.run(ddp, env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one = [sys.executable, "-m", "pipeline", *common, f"paths.output_dir={tmp_path / 'one'}"]
    r = subprocess.run(one, env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "ddp" / "cpu_sample" / "freemask"
    ranks = [json.loads((run / "shards" / "val" / f"shard_{i:05d}.json").read_text())["rank"]
             for i in range(4)]
    assert ranks == [0, 1, 0, 1]
    a = json.loads((run / "free_masks_val.json").read_text())
    b = json.loads((tmp_path / "one" / "cpu_sample" / "freemask" / "free_masks_val.json")
                   .read_text())
    assert a["annotations"] == b["annotations"] and a["images"] == b["images"]
    assert json.loads((run / "metrics.json").read_text())["val"]["images"] == 4


def _torchrun(args, out, port_offset):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={29500 + (os.getpid() + port_offset) % 1000}", "-m", "pipeline",
           *args, "hardware.threads=1", f"paths.output_dir={out}"]
    # one thread per rank whatever the caller's OMP_NUM_THREADS: float sums in _single's order
    r = subprocess.run(cmd, env=dict(cli_env(), OMP_NUM_THREADS="1"), cwd=ROOT,
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]


def _single(args, out):
    """One process with one thread, like each torchrun rank: float sums in the same order."""
    r = subprocess.run([sys.executable, "-m", "pipeline", *args, "hardware.threads=1",
                        f"paths.output_dir={out}"], env=dict(cli_env(), OMP_NUM_THREADS="1"),
                       cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("stage", ["maskrcnn", "solo"])
def test_torchrun_trains_once_and_predicts_what_one_process_predicts(tmp_path, tiny_sample,
                                                                     stage):
    """Two ranks (gloo) train one model: rank 0 alone writes the checkpoint and the metrics.
    Their split predictions, merged and evaluated by rank 0, equal those of one process that
    loads the same weights (found: rank 1 predicted with its own BN statistics until the
    ranks took rank 0's state after training)."""
    import json
    import shutil
    data = [f"paths.data_dir={tiny_sample}", "dataset.generate.num.train=8",
            "dataset.generate.num.val=4", "dataset.generate.num.test=4",
            "backbone.weights=null", "progress=false", "overlays=0"]
    if stage == "maskrcnn":
        args = [*data, "stage=maskrcnn", "maskrcnn.train.max_iter=2",
                "maskrcnn.train.batch_size=1", "maskrcnn.train.log_every=1",
                "maskrcnn.inference.shard_size=1", "maskrcnn.eval_splits=[test]",
                "maskrcnn.inference.score_threshold=0.0"]
        run, files = "maskrcnn", ["predictions_test.json"]
    else:
        fm = [*data, "stage=freemask", "freemask.splits=[train]", "freemask.eval_splits=[]",
              "freemask.freesolo.min_maskness=0.0"]
        _single(fm, tmp_path / "ddp")
        shutil.copytree(tmp_path / "ddp", tmp_path / "one")
        args = [*data, "stage=solo", "solo.rounds=1", "solo.train.max_iter=2",
                "solo.train.batch_size=1", "solo.train.log_every=1",
                "solo.inference.shard_size=1", "solo.eval_splits=[test]",
                "solo.inference.score_threshold=0.0", "solo.inference.update_threshold=0.0",
                "solo.self_training.score_threshold=0.0"]
        run, files = "solo/round1", ["predictions_train.json", "predictions_test.json"]
    _torchrun(args, tmp_path / "ddp", 13)
    ddp = tmp_path / "ddp" / "cpu_sample" / run
    rows = list(csv.DictReader(open(ddp / "metrics.csv")))
    assert [int(x["iteration"]) for x in rows] == [1, 2]          # written once, by rank 0
    ranks = {json.loads(p.read_text())["rank"] for p in (ddp / "shards" / "test").glob("*.json")}
    assert ranks == {0, 1}                                        # both ranks predicted
    one = tmp_path / "one" / "cpu_sample" / run
    one.mkdir(parents=True)
    for f in ("model.pt", "inputs.json"):
        if (ddp / f).exists():
            shutil.copy(ddp / f, one / f)
    log = _single(args, tmp_path / "one")
    assert "already trained" in log
    for f in files:
        a, b = json.loads((ddp / f).read_text()), json.loads((one / f).read_text())
        assert a["annotations"] and a["annotations"] == b["annotations"], f
    assert json.loads((ddp / "metrics.json").read_text())["test"]["metrics"] == \
        json.loads((one / "metrics.json").read_text())["test"]["metrics"]
