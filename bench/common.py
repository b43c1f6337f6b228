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
    return ap.parse_known_args()


def timed(fn, repeat: int, warmup: int = 2) -> float:
    """Seconds per call of fn(i), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i)
    t0 = time.perf_counter()
    for i in range(repeat):
        fn(warmup + i)
    return (time.perf_counter() - t0) / repeat
