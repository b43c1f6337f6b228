"""Stage `report`: one table over the runs of an experiment (their metrics.json files), and,
with or without ground truth, what the pseudo-label sources look like (counts, scores,
borders, agreement, overlays) with a warning where they look like colour regions or noise."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline import choose
from pipeline.data.coco import load_coco
from pipeline.eval import label_free
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
    if rows or cfg.dataset.eval_splits:
        table = format_table(rows, title=f"class-agnostic results on the {r.split} split "
                                         f"({cfg.dataset.name})")
        verdict = best_baseline_verdict(rows)
        if verdict:
            table += "\n\n" + verdict
        if missing:
            table += "\n\nnot run yet: " + "; ".join(missing)
    else:
        table = (f"dataset {cfg.dataset.name} has no ground truth: no mask AP. What the "
                 f"pseudo-labels look like instead:")
    described, warned = describe_sources(cfg)
    table += "\n\n" + described
    picked = describe_choice(r.get("choice"))
    if picked:
        table += "\n\n" + picked
    print("\n" + table + "\n")
    out_dir = Path(cfg.run_dir)
    write_text(out_dir / "table.md", table + "\n")
    write_json(out_dir / "table.json", rows, indent=2)
    write_json(out_dir / "warnings.json", warned, indent=1)
    return rows


def describe_sources(cfg) -> tuple[str, list[str]]:
    """(markdown, warnings): each pseudo-label source of report.sources that exists,
    described without ground truth (pipeline.eval.label_free), the agreement between
    consecutive ones, where their overlays are, and the warnings drawn from them."""
    r = cfg.report
    found = {name: Path(p) for name, p in r.sources.items() if Path(p).is_file()}
    if not found:
        return "no pseudo-labels yet (make pseudo-labels)", []
    coco = {name: load_coco(p, f"source {name!r}") for name, p in found.items()}
    at = {name: float(r.warn.score.get(name, r.warn.other_score)) for name in coco}
    stats = {name: label_free.describe(c, at[name]) for name, c in coco.items()}
    agree = {f"{a} and {b}": label_free.agreement(coco[a], coco[b])
             for a, b in zip(r.agree, r.agree[1:]) if a in coco and b in coco}
    lines = ["| pseudo-label source (training images) | images | masks | images without "
             "| masks/image (max) | score p10 / p50 / p90 | confident | of those: touch "
             "the border | image covered | mask size | large at the border |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, s in stats.items():
        q = " / ".join("-" if v is None else f"{v:.2f}"
                       for v in (s["score_p10"], s["score_p50"], s["score_p90"]))
        lines.append(f"| {name} | {s['images']} | {s['masks']} | {s['empty_images']:.0%} | "
                     f"{s['masks_per_image']:.1f} ({s['max_per_image']}) | {q} | "
                     f"{s['confident']:.0%} (>= {at[name]:g}) | {s['border']:.0%} | {s['coverage']:.0%} | "
                     f"{s['size']:.1%} | {s['regions']:.0%} |")
    for pair, v in agree.items():
        if v is not None:
            lines.append(f"\n{pair}: {v:.0%} of their masks agree (IoU >= 0.5)")
    shown = [str(p.parent / "overlays") for p in found.values() if (p.parent / "overlays").is_dir()]
    if shown:
        lines.append("\noverlays (image | masks): " + ", ".join(shown))
    warned = label_free.warnings(stats, agree, r.warn, stand_out=list(r.warn.score))
    for w in warned:
        log.warning("%s", w)
    if warned:
        lines.append("\nWARNING: these pseudo-labels look like colour regions or noise, not "
                     "objects:\n" + "\n".join(f"- {w}" for w in warned)
                     + "\nThe CPU chain's colour graph finds objects that differ from their "
                       "surroundings in colour (docs/real-images.md). Here, give a self-"
                       "supervised checkpoint (backbone.weights=) or label points "
                       "(make annotate) before training on these.")
    return "\n".join(lines), warned


def describe_choice(path) -> str:
    """The pseudo-label source stage=choose picked (choice.json), or "" when it has not run."""
    if not path or not Path(path).is_file():
        return ""
    result = read_json(path, "report.choice")
    text = choose.describe(result)
    changed = choose.stale_inputs(result)
    if changed:
        text += (f"\nNOTE: {', '.join(changed)} changed since this pick; rerun "
                 f"python -m pipeline stage=choose")
    return text
