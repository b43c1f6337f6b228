import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("CI", "true")  # no progress bars in test logs


def make_cfg(tmp_path, *overrides, run_name="run"):
    """Compose the real config with test paths; the run directory is tmp_path/work/run_name."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"paths.output_dir={tmp_path / 'outputs'}",
            f"run_name={run_name}", *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.paths.work_dir) / cfg.run_name)
    return cfg


TINY_SAMPLE = ["dataset.generate.num.train=8", "dataset.generate.num.val=4",
               "dataset.generate.num.test=4"]


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """A small copy of the embedded sample (8 train, 4 val, 4 test images), generated once."""
    root = tmp_path_factory.mktemp("data")
    from pipeline.data.sample import generate
    generate(root / "sample", seed=0, splits={"train": 8, "val": 4, "test": 4}, progress=False)
    return root


@pytest.fixture
def sample_cfg(tmp_path, tiny_sample):
    def _make(*overrides, run_name="run"):
        sample = [] if "dataset=folder" in overrides else TINY_SAMPLE
        return make_cfg(tmp_path, f"paths.data_dir={tiny_sample}", *sample, *overrides,
                        run_name=run_name)
    return _make


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return Path(dst)


def cli_env() -> dict:
    """Environment for `python -m pipeline` subprocesses run from the repository root."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


def pipeline_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def kill_9_when(cmd: list[str], ready, timeout: float = 300) -> None:
    """Start `cmd`, wait until ready() or the process ends, then SIGKILL its process group."""
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory, tiny_sample):
    """A real Label Studio server, started once per session, stopped by its PID."""
    from annotation.server import free_port, start
    token, password = secrets.token_hex(20), "pw-" + secrets.token_hex(8)
    data = tmp_path_factory.mktemp("label_studio")
    server = start(data, free_port(), token, "admin@weakseg.local", password,
                   document_root=tiny_sample)
    server.token, server.password = token, password
    server.username = "admin@weakseg.local"
    try:
        yield server
    finally:
        server.stop()
        with pytest.raises(ProcessLookupError):
            os.killpg(server.pid, 0)
