"""Stage `report`: one table over the runs of an experiment (their metrics.json files)."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.eval.coco_eval import format_table
from pipeline.io import read_json, write_json, write_text

log = logging.getLogger(__name__)


def best_baseline_verdict(rows: dict) -> str:
    """One line: the best no-learning baseline (rows labelled "baseline: ...") against the
    last learned row (the pseudo-label set), by mask AP."""
    ap = {k: v.get("segm", {}).get("AP", 0.0) for k, v in rows.items()}
    baselines = [k for k in ap if k.startswith("baseline:")]
    learned = [k for k in ap if not k.startswith("baseline:")]
    if not baselines or not learned:
        return ""
    best, last = max(baselines, key=ap.get), learned[-1]
    gap = ap[last] - ap[best]
    word = "beats" if gap > 0 else "does NOT beat"
    return (f"best no-learning baseline: {best} ({ap[best]:.1f} mask AP); {last} {word} it "
            f"({ap[last]:.1f}, {gap:+.1f})")


def run(cfg) -> dict:
    r = cfg.report
    rows, missing = {}, []
    for label, run_name in r.runs.items():
        path = Path(cfg.paths.work_dir) / run_name / "metrics.json"
        if not path.is_file():
            missing.append(f"{label} ({path})")
            continue
        m = read_json(path).get(r.split, {}).get("metrics")
        if m is None:
            missing.append(f"{label} (no {r.split} metrics in {path})")
            continue
        rows[label] = m
    table = format_table(rows, title=f"class-agnostic results on the {r.split} split "
                                     f"({cfg.dataset.name})")
    verdict = best_baseline_verdict(rows)
    if verdict:
        table += "\n\n" + verdict
    if missing:
        table += "\n\nnot run yet: " + "; ".join(missing)
    print("\n" + table + "\n")
    out_dir = Path(cfg.run_dir)
    write_text(out_dir / "table.md", table + "\n")
    write_json(out_dir / "table.json", rows, indent=2)
    return rows
