"""Fault injection over the whole chain: random kill -9s and one image-folder swap.

    python bench/faults.py [--kills 6] [--seed 0] [--full]

1. Runs the chain (sample -> pretrain -> freemask -> baseline -> solo -> maskrcnn full)
   uninterrupted into `reference/`.
2. Runs it again into `faulted/`, killing the process group of a stage with SIGKILL at a
   random moment `--kills` times in all, rerunning each stage until it finishes.
3. Compares every prediction file and trained model of the two runs byte for byte.
4. Swaps the image folder for one with the same file names and other pixels (a mirrored
   copy) and reruns the chain into `faulted/`. A stage that exits 0 and reports outputs
   byte-identical to those made from the old folder reported a stale result; a stage that
   recomputes, or refuses in one line (trained weights made from other images), did not.
5. The same swap, but in place and invisible to size and mtime: a fresh chain on stored
   (uncompressed) PNGs, then every image overwritten by its mirror of the same byte size with
   its mtime restored (as `cp -p`, rsync or tar leave it), and the chain rerun: stale results
   are counted as in 4.
6. A refused run, then compare: a one-job sweep (Mask R-CNN, full masks), `supervision=points`
   run into that job's folder (refused: the folder holds full-mask weights), then
   `stage=compare`. Passes when the refused run changed nothing (config.yaml, no points file)
   and the table shows no points row with an AP.

Default: a shortened chain on 16 + 8 sample images (minutes); --full: the CPU experiment's
own schedules (about 20 min uninterrupted on 2 cores). Prints one table and writes
bench/results/faults.json.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "faults"

QUICK = {
    "pretrain": ["pretrain.max_iter=12", "pretrain.ckpt_every=3", "pretrain.warmup_iter=2",
                 "pretrain.queue_size=8", "pretrain.batch_size=8"],
    "freemask": ["freemask.shard_size=4"],
    "baseline": ["baseline.shard_size=4"],
    "solo": ["solo.train.max_iter=12", "solo.train.ckpt_every=3", "solo.train.warmup_iter=2",
             "solo.inference.shard_size=4", "solo.self_training.score_threshold=0.0",
             "solo.inference.score_threshold=0.0", "solo.inference.update_threshold=0.0"],
    "maskrcnn": ["maskrcnn.train.max_iter=8", "maskrcnn.train.ckpt_every=2",
                 "maskrcnn.inference.shard_size=4", "supervision=full"],
}
STAGES = list(QUICK)
OUTPUTS = {  # what each stage makes that a later stage or a table reads
    "pretrain": ["pretrain/backbone.pt"],
    "freemask": ["freemask/free_masks_train.json", "freemask/free_masks_val.json"],
    "baseline": ["baseline/colour_components/colour_components_val.json",
                 "baseline/threshold_components/threshold_components_val.json"],
    "solo": ["solo/round1/model.pt", "solo/round2/model.pt", "solo/pseudo_labels.json",
             "solo/round2/predictions_val.json"],
    "maskrcnn": ["maskrcnn/model.pt", "maskrcnn/predictions_val.json"],
}


def cmd(stage, data, out, full, *extra):
    args = [f"stage={stage}", f"paths.data_dir={data}", f"paths.output_dir={out}",
            "progress=false", "overlays=0", "experiment_name=bench"]
    if not full:
        args += ["dataset.generate.num.train=16", "dataset.generate.num.val=8",
                 "dataset.generate.num.test=8", *QUICK.get(stage, [])]
    return [sys.executable, "-m", "pipeline", *args, *extra]


def run(stage, data, out, full, kill_after: float | None = None,
        extra: tuple = ()) -> tuple[str, float]:
    """('done' | 'killed' | 'failed: <last line>', seconds)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd(stage, data, out, full, *extra), cwd=ROOT,
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), CI="true"))
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "killed", time.time() - t0
    if proc.returncode == 0:
        return "done", time.time() - t0
    last = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"]
    return f"failed (exit {proc.returncode}): {last[0][:600]}", time.time() - t0


def digest(out: Path, stage: str) -> dict:
    """sha1 per output: weights byte for byte; COCO files by images and annotations (their
    `info` names the run's own folder, which differs between the two runs by design)."""
    root = out / "bench"

    def one(p: Path):
        if not p.is_file():
            return None
        if p.suffix == ".json":
            d = json.loads(p.read_text())
            blob = json.dumps([d.get("images"), d.get("annotations")], sort_keys=True).encode()
        else:
            blob = p.read_bytes()
        return hashlib.sha1(blob).hexdigest()
    return {f: one(root / f) for f in OUTPUTS[stage]}


def mirror_copy(src: Path, dst: Path) -> None:
    """The same file names and annotations, every image mirrored: other pixels."""
    shutil.copytree(src, dst)
    for p in dst.rglob("*.png"):
        Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(p))[:, ::-1])).save(p)


def stored_copy(src: Path, dst: Path) -> None:
    """The same images as stored (uncompressed) PNGs: one byte size per image size."""
    shutil.copytree(src, dst)
    for p in dst.rglob("*.png"):
        Image.open(p).save(p, compress_level=0)


def swap_keeping_size_and_mtime(folder: Path) -> int:
    """Every image overwritten in place by its mirror, same byte size, mtime restored."""
    n = 0
    for p in folder.rglob("*.png"):
        st = p.stat()
        Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(p))[:, ::-1])).save(
            p, compress_level=0)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = p.stat()
        assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns), p
        n += 1
    return n


def stale_after_rerun(data: Path, out: Path, full: bool, before: dict) -> dict:
    swap = {}
    for s in STAGES:
        status, _ = run(s, data, out, full)
        after = digest(out, s)
        stale = status == "done" and any(after[f] is not None and after[f] == before[s][f]
                                         for f in after)
        swap[s] = {"status": status, "stale": stale}
    return swap


def refused_then_compare(data: Path, out: Path, full: bool) -> dict:
    """Phase 6: nothing of a refused run reaches the folder or the comparison table."""
    sweep = out / "bench" / "multirun"
    status, _ = run("pretrain", data, out, full)   # the sweep's job fine-tunes this backbone
    if status != "done":
        return {"ok": False, "why": f"pretrain: {status}"}
    r = subprocess.run([*cmd("maskrcnn", data, out, full), "-m"], cwd=ROOT,
                       capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), CI="true"))
    jobs = list(sweep.glob("*supervision=full*"))
    if r.returncode != 0 or len(jobs) != 1:
        return {"ok": False, "why": f"sweep failed: {r.stderr[-300:]}"}
    job = jobs[0]
    config = (job / "config.yaml").read_bytes()
    status, _ = run("maskrcnn", data, out, full,
                    extra=("supervision=points", f"hydra.run.dir='{job}'"))
    refused = status.startswith("failed") and "made from other inputs" in status
    unchanged = (job / "config.yaml").read_bytes() == config
    points_file = any(job.glob("points_*.json"))
    status_c, _ = run("compare", data, out, full, extra=(f"compare.sweep_dir={sweep}",))
    rows = list(csv.DictReader(open(out / "bench" / "compare" / "comparison.csv"))) \
        if status_c == "done" else []
    job_rows = [r for r in rows if r.get("supervision") in ("full", "points")]
    points_ok = [r for r in job_rows if r["supervision"] == "points" and r["status"] == "ok"]
    return {"ok": refused and unchanged and not points_file and bool(job_rows)
            and not points_ok,
            "refused": refused, "config_unchanged": unchanged,
            "points_file_written": points_file, "compare": status_c,
            "rows": [{k: r[k] for k in ("method", "status", "mask_AP")} for r in job_rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    shutil.rmtree(OUT, ignore_errors=True)
    data_a, data_b, link = OUT / "data_a", OUT / "data_b", OUT / "data"
    ref_out, out = OUT / "reference", OUT / "faulted"
    status, secs = run("sample", data_a, ref_out, a.full)
    assert status == "done", status
    mirror_copy(data_a, data_b)
    link.symlink_to(data_a.name)

    # 1. uninterrupted reference
    ref_time, ref = {}, {}
    for s in STAGES:
        status, ref_time[s] = run(s, link, ref_out, a.full)
        if status != "done":
            print(f"reference run failed at {s}: {status}")
            return 1
        ref[s] = digest(ref_out, s)

    # 2. the same chain, killed at random moments
    plan = {s: 0 for s in STAGES}
    for _ in range(a.kills):
        plan[rng.choice(STAGES)] += 1
    runs = kills = survived = 0
    for s in STAGES:
        for _ in range(plan[s]):
            # startup (imports, data) is most of a quick stage: kill in its first half
            status, _ = run(s, link, out, a.full, kill_after=rng.uniform(0.15, 0.6) * ref_time[s])
            runs += 1
            kills += status == "killed"
        status, _ = run(s, link, out, a.full)
        runs += 1
        if status != "done":
            print(f"{s} did not finish after its kills: {status}")
            return 1
        survived = kills
    faulted = {s: digest(out, s) for s in STAGES}
    same = sum(faulted[s][f] == ref[s][f] for s in STAGES for f in ref[s])
    total = sum(len(ref[s]) for s in STAGES)

    # 3. the image folder is swapped under the same path and file names
    link.unlink()
    link.symlink_to(data_b.name)
    swap = {}
    for s in STAGES:
        status, _ = run(s, link, out, a.full)
        runs += 1
        after = digest(out, s)
        stale = status == "done" and any(after[f] is not None and after[f] == ref[s][f]
                                         for f in after)
        swap[s] = {"status": status, "stale": stale}  # a refusal upstream does not stop
        # the next stage: it decides from its own inputs (a backbone may serve new images)
    stale_count = sum(v["stale"] for v in swap.values())

    # 5. the same kind of swap, invisible to size and mtime, on a fresh chain
    data_c, out_c = OUT / "data_c", OUT / "same_size"
    stored_copy(data_a, data_c)
    before = {}
    for s in STAGES:
        status, _ = run(s, data_c, out_c, a.full)
        if status != "done":
            print(f"chain on stored PNGs failed at {s}: {status}")
            return 1
        before[s] = digest(out_c, s)
    swapped = swap_keeping_size_and_mtime(data_c)
    same_size = stale_after_rerun(data_c, out_c, a.full, before)
    runs += 2 * len(STAGES)
    same_size_stale = sum(v["stale"] for v in same_size.values())

    # 6. a refused run, then the comparison
    refusal = refused_then_compare(link, OUT / "refused", a.full)

    report = {"mode": "full" if a.full else "quick", "seed": a.seed, "runs": runs,
              "kills": kills, "kills_survived": survived,
              "outputs_identical": f"{same}/{total}",
              "differing": [f for s in STAGES for f in ref[s] if faulted[s][f] != ref[s][f]],
              "reference_seconds": {s: round(t, 1) for s, t in ref_time.items()},
              "folder_swap": swap, "stale_results_reported": stale_count,
              "same_size_mtime_swap": {"images": swapped, "stages": same_size,
                                       "stale_results_reported": same_size_stale},
              "refused_then_compare": refusal}
    (OUT.parent / "faults.json").write_text(json.dumps(report, indent=2))
    print(f"| runs | kills | kills survived | outputs identical to uninterrupted | "
          f"stale results after folder swap | stale after same-size same-mtime swap | "
          f"refused run kept out of compare |\n|---:|---:|---:|---:|---:|---:|---|\n"
          f"| {runs} | {kills} | {survived} | {same}/{total} | {stale_count} | "
          f"{same_size_stale} | {'yes' if refusal['ok'] else 'NO'} |")
    for s, v in swap.items():
        print(f"  after swap, {s}: {v['status']}{' (STALE)' if v['stale'] else ''}")
    for s, v in same_size.items():
        print(f"  after same-size same-mtime swap of {swapped} images, {s}: "
              f"{v['status']}{' (STALE)' if v['stale'] else ''}")
    print(f"  refused run, then compare: {json.dumps(refusal)}")
    ok = same == total and stale_count == 0 and same_size_stale == 0 and refusal["ok"]
    return 0 if ok else 1



if __name__ == "__main__":
    sys.exit(main())
