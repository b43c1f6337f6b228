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
