"""Benchmark: every pseudo-label source of a dataset on its held-out split, over SOLO's seeds,
with the no-ground-truth pick (`stage=choose`) of each seed.

Reads the stages' own metrics (ground truth used only to score, as they were written) and
prints one markdown row per dataset: the free masks, SOLO round 1 and 2 (mean +- sample sd
over the seeds, each seed in brackets), the no-learning baselines, the chooser's pick for
each seed with that source's mask AP, and the best no-learning baseline.

    python -m pipeline dataset=<d> stage=solo seed=<s> run_name=solo_s<s>          # s = 1, 2
    python -m pipeline dataset=<d> stage=choose choose.solo_run=solo_s<s> run_name=choose_s<s>
    python bench/sources.py outputs/cpu_<d> --split test \\
        --runs solo:choose,solo_s1:choose_s1,solo_s2:choose_s2

Seed 0 is `make pseudo-labels`' own run (`solo`, `choose`).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import common  # noqa: F401  (puts the checkout on sys.path)

BASELINES = {"baseline: colour components": "colour_components",
             "baseline: Otsu threshold + components": "threshold_components",
             "baseline: Otsu + watershed split": "watershed"}
SHORT = {"free masks": "free masks", "SOLO round 1": "SOLO round 1",
         "SOLO round 2": "SOLO round 2", **{k: k.split(": ", 1)[1] for k in BASELINES}}


def run_ap(folder: Path, split: str) -> float | None:
    """Mask AP on `split` from a run folder's metrics.json (every stage writes one: freemask,
    baseline/<method>, <solo run>/round<k>), None when absent."""
    from pipeline.io import read_json
    f = folder / "metrics.json"
    if not f.is_file():
        return None
    node = read_json(f).get(split) or {}
    return (node.get("metrics") or {}).get("segm", {}).get("AP")


def source_folder(work: Path, name: str, solo_run: str) -> Path | None:
    """The run folder of the source `stage=choose` names `name`."""
    if name == "free masks":
        return work / "freemask"
    if name.startswith("SOLO round "):
        return work / solo_run / f"round{name.rsplit(' ', 1)[1]}"
    if name in BASELINES:
        return work / "baseline" / BASELINES[name]
    return None


def source_ap(work: Path, name: str, solo_run: str, split: str) -> float | None:
    """The held-out mask AP of the source `stage=choose` names `name`."""
    folder = source_folder(work, name, solo_run)
    return None if folder is None else run_ap(folder, split)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    each = " / ".join(f"{v:.1f}" for v in values)
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({each})"


def row(work: Path, split: str, runs: list[tuple[str, str]]) -> dict:
    from pipeline.io import read_json
    out = {"free masks": source_ap(work, "free masks", "", split)}
    for k in (1, 2):
        out[f"SOLO round {k}"] = [v for v in (source_ap(work, f"SOLO round {k}", s, split)
                                              for s, _ in runs) if v is not None]
    for name in BASELINES:
        out[name] = source_ap(work, name, "", split)
    picks = []
    for solo_run, choose_run in runs:
        f = work / choose_run / "choice.json"
        if f.is_file():
            winner = read_json(f)["winner"]
            picks.append((winner, source_ap(work, winner, solo_run, split)))
    out["picks"] = picks
    base = {k: v for k, v in out.items() if k in BASELINES and v is not None}
    out["best baseline"] = max(base.items(), key=lambda kv: kv[1]) if base else None
    return out


def markdown(name: str, r: dict) -> str:
    def ap(v):
        return "-" if v is None else f"{v:.1f}"
    picks = "; ".join(f"{SHORT.get(w, w)} {ap(v)}" for w, v in r["picks"]) or "-"
    best = r["best baseline"]
    cells = [name, ap(r["free masks"]), spread(r["SOLO round 1"]), spread(r["SOLO round 2"]),
             *[ap(r[k]) for k in BASELINES], picks,
             f"{SHORT[best[0]]} {best[1]:.1f}" if best else "-"]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| dev set (held-out split) | free masks | SOLO round 1 | SOLO round 2 | colour "
          "components | Otsu + components | Otsu + watershed | chooser's pick per seed (no "
          "ground truth) | best no-learning baseline |\n"
          "|---|---:|---:|---:|---:|---:|---:|---|---|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", help="the experiment's work dir, e.g. outputs/cpu_pasted")
    ap.add_argument("--split", default="test")
    ap.add_argument("--runs", default="solo:choose",
                    help="SOLO run:choose run pairs, one per seed, comma-separated")
    ap.add_argument("--name", default=None, help="the row's name (default: the work dir's)")
    ap.add_argument("--header", action="store_true")
    args = ap.parse_args(argv)
    runs = [tuple(p.split(":", 1)) for p in args.runs.split(",") if p]
    work = Path(args.work)
    r = row(work, args.split, runs)
    if args.header:
        print(HEADER)
    print(markdown(f"{args.name or work.name} ({args.split})", r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
