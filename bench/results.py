"""Write docs/results.md from the runs' own tables, so the published figures cannot drift from
what the code makes: each experiment's `report/table.md` (the pseudo-label table of `make
pseudo-labels`) and `compare/comparison.md` (the supervision sweep of `make compare[-more|-seeds]`),
with the command that makes each, the machine and the date of each table.

    python bench/results.py [--outputs outputs] [--out docs/results.md]

The sample's AP-vs-cost plot is copied to docs/ap_vs_cost.png, which the README shows.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.io import write_text  # noqa: E402

# experiment folder -> (what it is, the command that makes its tables)
KNOWN = {
    "cpu_sample": ("the embedded synthetic sample (`experiment=cpu_sample`)", ""),
    "cpu_coins": ("scikit-image's `coins`, a real photograph with masks", 'ARGS="dataset=coins"'),
}
# the README shows the sample's pseudo-label table between these two lines
README_START, README_END = "<!-- results: cpu_sample report -->", "<!-- /results -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> str:
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
        # what this script writes (docs/, README.md) does not make the code dirty
        dirty = subprocess.run(git + ["status", "--porcelain", "--", ".", ":!docs",
                                      ":!README.md"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def table_body(path: Path, root: Path | None = None) -> str:
    """A run's table without its own heading line (the section names it); paths under `root`
    (the checkout the run was made in) are shown relative to it, as a reader's clone has them."""
    text = path.read_text()
    if root is not None:
        text = text.replace(f"{root.resolve()}/", "")
    lines = text.strip().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip()


def update_readme(readme: Path, table: Path) -> bool:
    """Put the sample's pseudo-label table into the README between its markers."""
    text = readme.read_text()
    if README_START not in text or README_END not in text or not table.is_file():
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    blocks = table_body(table).split("\n\n")
    # the AP table and its verdict line; the per-source description stays in docs/results.md
    shown = blocks[:2] if len(blocks) > 1 and not blocks[1].startswith("|") else blocks[:1]
    write_text(readme, f"{head}{README_START}\n" + "\n\n".join(shown) +
               f"\n{README_END}{tail}")
    return True


def pseudo_label_picture(outputs: Path, data: Path, out: Path, n: int = 4,
                         min_score: float = 0.3) -> bool:
    """The first n test images of the sample beside SOLO round 2's masks scoring >= min_score
    (the self-training threshold that makes the pseudo-label set): what a user gets."""
    import numpy as np
    from PIL import Image

    from pipeline.data.coco import annotations_by_image
    from pipeline.data.images import read_rgb
    from pipeline.io import read_json, write_with
    from pipeline.viz import overlay

    pred = outputs / "cpu_sample" / "solo" / "round2" / "predictions_test.json"
    if not pred.is_file():
        return False
    coco = read_json(pred)
    by_image = annotations_by_image(coco)
    tiles = []
    for info in coco["images"][:n]:
        img = read_rgb(data / "sample" / "test" / info["file_name"])
        anns = [a for a in by_image.get(info["id"], []) if a.get("score", 1.0) >= min_score]
        tiles.append(np.concatenate([img, np.asarray(overlay(img, anns, show_score=False))], 0))
    grid = Image.fromarray(np.concatenate(tiles, 1))
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
    write_with(out, lambda f: grid.save(f, format="JPEG", quality=90))
    return True


def sections(outputs: Path) -> list[str]:
    parts = []
    for exp in sorted(p for p in outputs.iterdir() if p.is_dir()):
        what, args = KNOWN.get(exp.name, (f"experiment folder `{exp.name}`", "ARGS=..."))
        args = f" {args}" if args else ""
        tables = [(exp / "report" / "table.md", "Pseudo-labels without annotation",
                   f"make pseudo-labels{args}"),
                  (exp / "compare" / "comparison.md", "Mask AP against annotation cost",
                   f"make compare{args} (rows over seeds: make compare-seeds{args})")]
        found = [row for row in tables if row[0].is_file()]
        if not found:
            continue
        parts.append(f"## {exp.name}: {what}\n")
        for path, title, command in found:
            parts.append(f"### {title}\n\nMade by `{command}`; "
                         f"{path.relative_to(outputs.parent)}, written {stamp(path)}.\n\n"
                         f"{table_body(path, outputs.parent)}\n")
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="paths.data_dir of the runs")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md",
                    help="its table between the results markers follows the sample's run")
    a = ap.parse_args(argv)
    if not a.outputs.is_dir():
        print(f"no runs under {a.outputs}: run make pseudo-labels (and make compare) first",
              file=sys.stderr)
        return 2
    parts = sections(a.outputs)
    if not parts:
        print(f"no report/table.md or compare/comparison.md under {a.outputs}/*: run make "
              f"pseudo-labels (and make compare) first", file=sys.stderr)
        return 2
    head = (f"# Results\n\nGenerated by `make results` (`bench/results.py`) from the runs' own "
            f"tables; do not edit by hand. Written at code `{code_version()}` (a table made earlier "
            f"carries its own date), {os.cpu_count()} CPU cores "
            f"({cpu_name()}), no GPU unless a table says so. Class-agnostic COCO metrics; the "
            f"sample's tables report its test split, coins its held-out half. What each setting "
            f"did: [measurements.md](measurements.md).\n")
    write_text(a.out, "\n".join([head] + parts))
    plot = a.outputs / "cpu_sample" / "compare" / "ap_vs_cost.png"
    if plot.is_file():
        shutil.copyfile(plot, a.out.parent / "ap_vs_cost.png")
    if pseudo_label_picture(a.outputs, a.data, a.out.parent / "pseudo_labels.jpg"):
        print(f"{a.out.parent / 'pseudo_labels.jpg'}: the sample's pseudo-labels drawn")
    if update_readme(a.readme, a.outputs / "cpu_sample" / "report" / "table.md"):
        print(f"{a.readme}: the sample's table updated")
    print(f"wrote {a.out} ({len(parts)} experiment(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
