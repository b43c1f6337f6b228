"""Benchmark: Label Studio server start time, import and sync throughput (tasks/s), venv size.

    .venv/bin/python bench/label_studio.py [--tasks 500]
Uses a real server on a free port with a temporary data dir, the sample's training images
repeated to reach --tasks tasks, and the simulated annotator.
"""
from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--points", type=int, default=10)
    args = ap.parse_args()
    from annotation import sync as ls_sync, tasks
    from annotator import simulate
    from annotation.client import connect
    from annotation.server import ensure_server_venv, free_port, start
    from pipeline.data.coco import load_coco
    from pipeline.data.sample import generate

    data = ROOT / "data"
    js = data / "sample" / "annotations" / "instances_train.json"
    if not js.is_file():
        generate(data / "sample", progress=False)
    gt = load_coco(js)
    # repeat images under new ids to reach the task count
    images, anns = [], []
    for k in range(args.tasks):
        im = gt["images"][k % len(gt["images"])]
        images.append(dict(im, id=k + 1))
        anns += [dict(a, image_id=k + 1) for a in gt["annotations"] if a["image_id"] == im["id"]]
    coco = dict(gt, images=images, annotations=anns)
    ensure_server_venv()
    size = subprocess.run(["du", "-sm", str(ROOT / ".venv-ls")], capture_output=True,
                          text=True).stdout.split()[0]
    token = secrets.token_hex(20)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server = start(Path(tmp) / "ls", free_port(), token, "admin@weakseg.local",
                       secrets.token_hex(8), data)
        t_start = time.perf_counter() - t0
        try:
            client = connect(server.url, token)
            pid = tasks.get_or_create_project(client, "bench", [c["name"] for c in
                                                                gt["categories"]])
            t0 = time.perf_counter()
            tasks.import_coco(client, pid, coco, data / "sample" / "train", data,
                              n_points=args.points)
            t_import = time.perf_counter() - t0
            t0 = time.perf_counter()
            simulate.annotate_all(client, pid, coco)
            t_annot = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = ls_sync.sync(client, pid, Path(tmp) / "sync", {im["id"]: im for im in images},
                               gt["categories"], data / "sample" / "train",
                               Path(tmp) / "points.json")
            t_sync = time.perf_counter() - t0
            t0 = time.perf_counter()
            ls_sync.sync(client, pid, Path(tmp) / "sync", {im["id"]: im for im in images},
                         gt["categories"], data / "sample" / "train", Path(tmp) / "points.json")
            t_resync = time.perf_counter() - t0
        finally:
            server.stop()
    n = args.tasks
    print(f"Label Studio benchmark: {n} tasks, {len(anns)} boxes, {args.points} points per box")
    print("| what | figure |\n|---|---:|")
    print(f"| server start to /health 200 | {t_start:.1f} s |")
    print(f"| import (with pre-annotations) | {n / t_import:.1f} tasks/s ({t_import:.1f} s) |")
    print(f"| simulated annotator (API) | {n / t_annot:.1f} tasks/s |")
    print(f"| sync: pull + raw export + convert | {n / t_sync:.1f} tasks/s ({t_sync:.1f} s, "
          f"{res['instances']} instances) |")
    print(f"| re-sync, nothing changed | {n / t_resync:.1f} tasks/s |")
    print(f"| .venv-ls size | {size} MB |")


if __name__ == "__main__":
    main()
