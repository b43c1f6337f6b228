"""Two runs into one folder: the second fails at once naming the first; writes never collide."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.__main__ import run_stage
from pipeline.io import write_json, write_with
from pipeline.lock import FolderInUse, folder_lock
from tests.conftest import ROOT, cli_env

HOLD = ("import sys, time\nfrom pipeline.lock import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n")


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_into_a_folder_in_use_fails_at_once_naming_the_holder(sample_cfg):
    cfg = sample_cfg("stage=baseline", "baseline.splits=[val]", "overlays=0")
    proc = _holder(Path(cfg.run_dir))
    try:
        t0 = time.time()
        with pytest.raises(FolderInUse, match=rf"in use by another run \(pid {proc.pid} on .*"
                                              r"another run_name"):
            run_stage(cfg)
        assert time.time() - t0 < 5
        assert not list(Path(cfg.run_dir).rglob("*.json"))  # nothing written beside the holder
    finally:
        proc.kill()
        proc.wait()
    run_stage(cfg)  # kill -9 of the holder released the folder
    assert list(Path(cfg.run_dir).rglob("metrics.json"))


def test_cli_refusal_leaves_the_holders_error_file_alone(sample_cfg, tmp_path):
    folder = tmp_path / "outputs" / "cpu_sample" / "baseline"
    proc = _holder(folder)
    try:
        r = subprocess.run([sys.executable, "-m", "pipeline", "stage=baseline",
                            f"paths.output_dir={tmp_path / 'outputs'}", "run_name=baseline"],
                           cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert r.returncode == 2, r.stderr
    assert f"is in use by another run (pid {proc.pid}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (folder / "error.txt").exists()
    # nor a log line or an attempt record in the folder the other run holds (issue 34)
    assert all(p.stat().st_size == 0 for p in folder.glob("*.log"))
    assert not (folder / "attempts").exists() and not (folder / "config.yaml").exists()


def test_same_process_cannot_enter_a_folder_twice(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(FolderInUse):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released on exit
        pass


def test_concurrent_atomic_writes_to_one_path_never_collide(tmp_path):
    target = tmp_path / "val_00000.png"
    errors = []

    def writer(i):
        try:
            for _ in range(30):
                write_with(target, lambda f: f.write(bytes([i]) * 1000))
                write_json(tmp_path / "m.json", {"writer": i})
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = target.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1  # one whole write, never a mix
    assert not list(tmp_path.glob(".*.tmp"))
