"""One call on a GPU machine: every GPU benchmark of the pipeline, one table (`make gpu-check`).

Runs the benchmarks at the settings real datasets use (ResNet-50; DenseCL 224 px batch 256,
free masks res5 800 px, Mask R-CNN, SOLO and the students (Mask R-CNN, SparseInst,
AdaMixer: training s/iteration, inference images/s) on the sample's images) while sampling GPU
utilisation with nvidia-smi, then prints each headline figure beside the utilisation seen
during its benchmark. Budget: under 8 minutes on one H200-class GPU.

    .venv/bin/python bench/gpu_check.py            # on the GPU machine
    .venv/bin/python bench/gpu_check.py --dry-run  # the same plan, tiny, on this CPU
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time

from common import ROOT

RESULTS = ROOT / "bench" / "results"


def plan(dry: bool) -> list[tuple[str, list[str]]]:
    """(result name, command) per benchmark; dry: the same commands, CPU-sized."""
    if dry:
        gpu, r50 = ["--device", "cpu"], []
        pre = ["pretrain.batch_size=8", "pretrain.crop_size=64", "pretrain.hidden=64"]
        fm = ["--images", "8", "--short-side", "160", "--batch", "4"]
        iters = ["--iters", "2"]
    else:
        gpu, r50 = ["--device", "cuda"], ["backbone.arch=resnet50"]
        pre = ["pretrain.batch_size=256", "pretrain.crop_size=224", "pretrain.hidden=2048",
               "--workers", "8"]
        fm = ["--images", "256", "--short-side", "800", "--batch", "16", "--arch", "resnet50",
              "--level", "res5"]
        iters = ["--iters", "10"]
    hw = ["hardware=cpu"] if dry else ["hardware=gpu"]
    py = [sys.executable]
    return [
        # per-image views at batch 256 take seconds per iteration: fewer iterations
        ("pretrain", py + [str(ROOT / "bench/pretrain.py"), "--iters", "2" if dry else "6",
                           *hw, *r50, *pre]),
        ("freemask", py + [str(ROOT / "bench/freemask.py"), *gpu, "--weights", "", *fm]),
        ("train", py + [str(ROOT / "bench/train.py"), *gpu, *iters, *r50,
                        "--workers", "2" if dry else "8"]),
        ("solo", py + [str(ROOT / "bench/solo.py"), *gpu, *iters, *r50]),
        # every student (AdaMixer included): training s/iteration and inference images/s
        ("students", py + [str(ROOT / "bench/sparseinst.py"), *gpu, *iters, *r50]),
    ]


class Utilisation:
    """Mean GPU utilisation (%) sampled every 200 ms while a benchmark runs."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def stop(self) -> str:
        if self.proc is None:
            return "n/a (no nvidia-smi)"
        self.proc.terminate()
        return f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="CPU-sized, to test the script")
    args = ap.parse_args()
    rows, start = [], time.time()
    for name, cmd in plan(args.dry_run):
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
        util, t0 = Utilisation(), time.time()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
        used, secs = util.stop(), time.time() - t0
        print(r.stdout, flush=True)
        if r.returncode or not (RESULTS / f"{name}.json").is_file():
            print(r.stderr[-2000:], file=sys.stderr)
            rows.append((name, "FAILED", f"exit {r.returncode}", used, secs))
            continue
        for setting, figure in json.loads((RESULTS / f"{name}.json").read_text()):
            rows.append((name, setting, figure, used, secs))
    print(f"\nGPU check ({'dry run on CPU' if args.dry_run else 'GPU'}), "
          f"{time.time() - start:.0f} s in all")
    print("| benchmark | setting | figure | GPU utilisation during the benchmark | s |")
    print("|---|---|---|---:|---:|")
    for name, setting, figure, used, secs in rows:
        print(f"| {name} | {setting} | {figure} | {used} | {secs:.0f} |")
    if any(r[1] == "FAILED" for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
