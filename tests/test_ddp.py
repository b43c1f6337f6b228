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
           "dataset.generate.num.val=4", "dataset.generate.num.test=4", "pretrain.max_iter=3", "pretrain.batch_size=2",
           "pretrain.queue_size=8", "pretrain.log_every=1", "progress=false"]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "cpu_sample" / "pretrain"
    assert (run / "backbone.pt").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(x["iteration"]) for x in rows] == [1, 2, 3]   # rank 0 alone writes
