"""Stage `compare`: mask AP against annotation cost over a sweep of supervision levels.

Reads a Hydra sweep directory (one job per folder, `.hydra/config.yaml` + `metrics.json`, or
`error.txt` for a failed job) plus the label-free results of the pseudo-label stages, and
writes `comparison.csv`, `comparison.md` and `ap_vs_cost.png`. Runs standalone on any
sweep directory: `python -m pipeline stage=compare compare.sweep_dir=...`.
"""
from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pipeline.attempts import last_status
from pipeline.data.datasets import get_split
from pipeline.errors import UserError
from pipeline.eval.cost import measured_lead_time, seconds_per_instance
from pipeline.io import read_json, write_text, write_with
from pipeline.models.students import MODELS

log = logging.getLogger(__name__)

COLUMNS = ["method", "model", "supervision", "status", "mask_AP", "mask_AP_sd", "seeds",
           "mask_AP50", "mask_AP75", "boundary_AP", "box_AP", "pct_of_full",
           "annotation_s_per_image", "annotation_hours", "images_per_s", "run", "attempt"]


def _job_rows(sweep: Path, cost, instances: int, images: int, split: str) -> list[dict]:
    rows = []
    for cfg_file in sorted(sweep.rglob(".hydra/config.yaml")):  # values with / nest folders
        job = cfg_file.parent.parent
        # the copy the job wrote under its folder lock; Hydra's may be a refused run's
        mine = job / "config.yaml"
        c = OmegaConf.load(mine if mine.is_file() else cfg_file)
        sv = c.supervision
        n_points = int(sv.get("points", 0) or 0)  # only point supervision has the key
        measured = None
        if sv.get("annotations") and Path(str(sv.annotations)).is_file() and sv.name == "points":
            measured = measured_lead_time(read_json(sv.annotations))
        per_inst = seconds_per_instance(sv.name, cost, n_points, measured)
        model = str(c.get("model", "maskrcnn"))
        m_name = MODELS.get(model, model)
        refine = str((c.get(model) or {}).get("refine", "none"))  # maskrcnn.refine=transfiner
        if refine != "none":
            m_name += f" + {refine.capitalize()}"
        name = {"full": f"{m_name}, full masks",
                "points": f"{m_name}, points ({n_points} pts)",
                "free_masks": f"{m_name} on free masks",
                "solo": f"{m_name} on SOLO pseudo-labels"}.get(sv.name, f"{m_name}, {sv.name}")
        if sv.name in ("full", "points") and not sv.get("agnostic"):
            name += " (class-aware model)"  # collapsed classes: duplicates count as errors
        run = str(job.relative_to(sweep))
        row = {"method": name, "model": model, "refine": refine, "supervision": sv.name,
               "run": _without_seed(run),
               "annotation_s_per_image": per_inst * instances / max(images, 1),
               "annotation_hours": per_inst * instances / 3600}
        row.update(_job_status(job, split))
        rows.append(row)
    return rows


def _job_status(job: Path, split: str) -> dict:
    """status (ok only when the job's last attempt finished), the metrics and the attempt
    they came from. Folders from before attempts were recorded: failed when error.txt is
    newer than metrics.json."""
    metrics, err = job / "metrics.json", job / "error.txt"
    data = read_json(metrics) if metrics.is_file() else {}
    m = data.get(split, {}).get("metrics")
    out = {"images_per_s": (data.get("speed") or {}).get("images_per_s")}
    last = last_status(job)
    if last is not None and last.get("status") != "ok":
        n, what = last["attempt"], last.get("status")
        reason = {"running": "still running", "killed": "killed (process gone)"}.get(
            what, f"{what}: " + str(last.get("error", "")).strip())
        shown = f"; AP of attempt {data['attempt']} not shown" if m is not None and \
            data.get("attempt") else ""
        return dict(out, status=f"failed (attempt {n}, {reason})"[:160] + shown)
    stale_error = err.is_file() and (m is None or err.stat().st_mtime_ns >
                                     metrics.stat().st_mtime_ns)
    if m is None or (last is None and stale_error):
        return dict(out, status="failed: " + (err.read_text().strip()[:120] if err.is_file()
                                              else "no metrics.json (killed or still running)"))
    return dict(out, status="ok", mask_AP=m["segm"]["AP"], mask_AP50=m["segm"]["AP50"],
                box_AP=m["bbox"]["AP"], attempt=data.get("attempt"), **_boundary_cols(m))


def _direct_rows(work_dir: Path, direct: dict, split: str) -> list[dict]:
    """Label-free pseudo-masks evaluated as they are (no Mask R-CNN). A run may be a glob or
    a list of them (e.g. one folder per seed): the matches become one row, mean and spread."""
    rows = []
    for label, runs in direct.items():
        runs = [runs] if isinstance(runs, str) else list(runs)
        run = " + ".join(runs)
        found = [d for r in runs for d in sorted(work_dir.glob(r))] or [work_dir / runs[0]]
        for d in found:
            f = d / "metrics.json"
            m = read_json(f).get(split, {}).get("metrics") if f.is_file() else None
            row = {"method": label, "supervision": "none", "run": run,
                   "annotation_s_per_image": 0.0, "annotation_hours": 0.0}
            if m is None:
                row["status"] = f"not run ({f} missing)"
            else:
                row.update(status="ok", mask_AP=m["segm"]["AP"], mask_AP50=m["segm"]["AP50"],
                           box_AP=m["bbox"]["AP"], **_boundary_cols(m))
            rows.append(row)
    return rows


def _boundary_cols(m: dict) -> dict:
    """AP75 and AP^B (Boundary IoU); None for metrics written before AP^B was measured."""
    return {"mask_AP75": m["segm"].get("AP75"), "boundary_AP": (m.get("boundary") or {}).get("AP")}


def _without_seed(run: str) -> str:
    return re.sub(r"(^|,)seed=\d+(?=,|/|$)", "", run).lstrip(",") or "."


def aggregate(rows: list[dict]) -> list[dict]:
    """Rows of one method and run but other seeds -> one row: mean of the metrics, their
    sample standard deviation (`mask_AP_sd`) and the number of seeds (`seeds`)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["supervision"], r["run"]), []).append(r)
    out = []
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        row = dict(members[0], seeds=len(ok))
        if ok:
            for k in ("mask_AP", "mask_AP50", "box_AP"):
                row[k] = float(np.mean([r[k] for r in ok]))
            for k in ("mask_AP75", "boundary_AP"):
                vals = [r[k] for r in ok if r.get(k) is not None]
                row[k] = float(np.mean(vals)) if len(vals) == len(ok) else None
            speeds = [r["images_per_s"] for r in ok if r.get("images_per_s")]
            row["images_per_s"] = float(np.mean(speeds)) if speeds else None
            row["mask_AP_sd"] = float(np.std([r["mask_AP"] for r in ok], ddof=1)) \
                if len(ok) > 1 else None
            attempts = [r.get("attempt") for r in ok]
            row["attempt"] = None if not all(attempts) else attempts[0] if len(ok) == 1 \
                else "/".join(map(str, attempts))  # per seed
            bad = [r["status"] for r in members if r["status"] != "ok"]
            row["status"] = "ok" if not bad else f"{len(bad)} of {len(members)} failed: {bad[0]}"
        out.append(row)
    return out


def to_markdown(rows: list[dict], title: str) -> str:
    head = ["method", "mask AP", "mask AP50", "mask AP75", "AP^B", "box AP", "% of full",
            "annot. s / image", "annot. hours", "images / s", "status"]
    out = [f"### {title}", "", "| " + " | ".join(head) + " |",
           "|---|" + "---:|" * 9 + "---|"]

    def f(v, fmt="{:.1f}"):
        return "-" if v is None or v == "" else fmt.format(v)
    def ap(r):
        if r.get("mask_AP_sd") is None:
            return f(r.get("mask_AP"))
        return f"{r['mask_AP']:.1f} ± {r['mask_AP_sd']:.1f} ({r['seeds']} seeds)"
    for r in rows:
        out.append("| " + " | ".join([
            r["method"], ap(r), f(r.get("mask_AP50")), f(r.get("mask_AP75")),
            f(r.get("boundary_AP")), f(r.get("box_AP")),
            f(r.get("pct_of_full"), "{:.0f}%"), f(r.get("annotation_s_per_image")),
            f(r.get("annotation_hours"), "{:.2f}"), f(r.get("images_per_s")),
            _status(r)]) + " |")
    return "\n".join(out)


def _status(r: dict) -> str:
    """ok, with the attempt the AP came from when the job recorded it (several seeds: each)."""
    if r["status"] != "ok" or not r.get("attempt"):
        return r["status"]
    return f"ok (attempt {r['attempt']})"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    paid = [r["annotation_hours"] for r in ok if r["annotation_hours"] > 0]
    free_x = (min(paid) / 10) if paid else 1e-3  # log axis: label-free methods sit at the left
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for r in ok:
        x = r["annotation_hours"] or free_x
        marker = {"none": "s"}.get(r["supervision"], {"sparseinst": "^", "adamixer": "D"}
                                                      .get(r.get("model"), "o"))
        ax.scatter([x], [r["mask_AP"]], s=50, marker=marker, zorder=3)
        if r.get("mask_AP_sd"):  # spread over seeds
            ax.errorbar([x], [r["mask_AP"]], yerr=[r["mask_AP_sd"]], color="0.4", capsize=3,
                        lw=1, zorder=2)
        ax.annotate(r["method"].replace("Mask R-CNN, ", ""), (x, r["mask_AP"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    for model in {r.get("model") for r in ok}:  # one points-per-instance curve per model
        pts = sorted((r["annotation_hours"], r["mask_AP"]) for r in ok
                     if r["supervision"] == "points" and r["annotation_hours"] > 0
                     and r.get("model") == model)
        if len(pts) > 1:
            ax.plot(*zip(*pts), color="0.6", lw=1, zorder=1)
    ax.set_xscale("log")
    lo, hi = free_x / 2, max(paid or [free_x]) * 2
    ticks = [10.0 ** k for k in range(-6, 7) if free_x * 3 < 10.0 ** k < hi]
    ax.set_xticks([free_x] + ticks, ["0\n(no human labels)"] + [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(lo, hi)
    ax.axvline(free_x * 3, color="0.85", lw=0.8, ls="--")
    ax.set_xlabel("annotation hours for the training set (log scale)")
    ax.set_ylabel("mask AP")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def run(cfg) -> dict:
    c = cfg.compare
    sweep = Path(c.sweep_dir)
    if not sweep.is_dir():
        raise UserError(f"sweep directory not found: {sweep} (run the sweep first: make compare, "
                        f"or set compare.sweep_dir)")
    train = get_split(cfg.dataset, c.train_split)
    instances, images = len(train.coco["annotations"]), len(train.images)
    rows = _job_rows(sweep, c.cost, instances, images, c.split)
    if not rows:
        raise UserError(f"no sweep jobs (*/.hydra/config.yaml) under {sweep}")
    rows += _direct_rows(Path(cfg.paths.work_dir), c.direct, c.split)
    rows = aggregate(rows)
    full = sorted((r for r in rows if r["supervision"] == "full" and r["status"] == "ok"),
                  key=lambda r: (r.get("model") != "maskrcnn", r.get("refine", "none") != "none",
                                 "class-aware" in r["method"]))
    # like with like: each model (with its refinement) against its own full-mask run (agnostic
    # first); label-free rows against the first full-mask reference (plain Mask R-CNN's)
    reference = {}
    for r in full:
        reference.setdefault((r.get("model"), r.get("refine", "none")), r)
    for r in rows:
        ref = reference.get((r.get("model"), r.get("refine", "none"))) or \
            (full[0] if full else None)
        if ref and r.get("mask_AP") is not None and ref["mask_AP"] > 0:
            r["pct_of_full"] = 100 * r["mask_AP"] / ref["mask_AP"]
    order = {"full": 0, "points": 1, "free_masks": 2, "solo": 3, "none": 4}
    models = {"maskrcnn": 0, "sparseinst": 1, "adamixer": 2}
    rows.sort(key=lambda r: (models.get(r.get("model"), 9), r.get("refine", "none") != "none",
                             order.get(r["supervision"], 9),
                             -r["annotation_hours"], r["method"]))
    out = Path(cfg.run_dir)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "comparison.csv", buf.getvalue())
    title = (f"Mask AP vs annotation cost ({cfg.dataset.name}, {c.split}; cost model: "
             f"mask {c.cost.polygon_mask_s} s, box {c.cost.box_s} s, point {c.cost.point_s} s "
             f"per instance)")
    md = to_markdown(rows, title)
    write_text(out / "comparison.md", md + "\n")
    plot(rows, out / "ap_vs_cost.png", f"mask AP vs annotation cost ({cfg.dataset.name})")
    print("\n" + md + "\n")
    log.info("wrote %s, comparison.md, ap_vs_cost.png", out / "comparison.csv")
    return {"rows": rows}
