"""Plot convergence curves written by `bench/convergence.py`: box AP and mask AP against
training iterations, one line per run and split (log2 iterations).

    python bench/convergence_plot.py outputs/cpu_sample/curve/*/convergence_test.json \\
        --out docs/adamixer_convergence.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)

NAMES = {"maskrcnn": "Mask R-CNN", "sparseinst": "SparseInst", "adamixer": "AdaMixer"}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("curves", nargs="+", help="convergence_<split>.json files")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import write_with

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110, sharex=True)
    ticks, colours = set(), {}
    for path in args.curves:
        c = json.loads(Path(path).read_text())
        its = [r["iteration"] for r in c["rows"]]
        ticks.update(its)
        label = f"{NAMES.get(c['model'], c['model'])}, {c['supervision']} ({c['split']})"
        style = "-" if c["split"] == "test" else "--"  # one colour per model, style per split
        colour = colours.setdefault((c["model"], c["supervision"]), f"C{len(colours)}")
        for ax, key in zip(axes, ("box_AP", "mask_AP")):
            ax.plot(its, [r[key] for r in c["rows"]], style, marker="o", color=colour,
                    label=label)
    for ax, what in zip(axes, ("box AP", "mask AP")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel("training iteration (checkpoints of one cosine schedule)")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    write_with(Path(args.out), lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
