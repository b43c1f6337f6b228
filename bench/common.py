"""Helpers shared by the benchmarks: the composed config and a timer."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def config(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.data_dir={ROOT / 'data'}",
                                           f"paths.output_dir={ROOT / 'bench' / 'results'}",
                                           "progress=false", *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(ROOT / "bench" / "results" / "run")
    return cfg


def parse_args():
    """--iters/--threads, the rest are Hydra overrides."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="loader worker processes")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    return ap.parse_known_args()


def sync(device) -> None:
    """Wait for the GPU's queued work, so a timer measures it."""
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def training_precision(cfg, train_node, device):
    """The precision a stage's training step runs in (`<stage>.train.amp`, else
    hardware.amp): the training loop's MixedPrecision, so a benchmark times that step."""
    import torch
    from pipeline.train import MixedPrecision, stage_amp
    return MixedPrecision(stage_amp(cfg, train_node), torch.device(device).type)


def timed(fn, repeat: int, warmup: int = 2, device="cpu") -> float:
    """Seconds per call of fn(i), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(repeat):
        fn(warmup + i)
    sync(device)
    return (time.perf_counter() - t0) / repeat


def record(name: str, rows: list[tuple[str, str]]) -> None:
    """Keep a benchmark's headline figures (setting, figure) for `bench/gpu_check.py`."""
    import json
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=1))
