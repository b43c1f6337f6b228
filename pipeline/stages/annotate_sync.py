"""Stage `annotate_sync`: pull annotations (raw export kept first) and write `points.json`, COCO
with point_coords/point_labels (+ lead_time) for `supervision=points supervision.annotations=`;
then score each pseudo-label source by the synced points (`source_scores.json`)."""
from __future__ import annotations

from pathlib import Path

from annotation import sync as ls_sync
from annotation import tasks
from annotation.client import connect
from annotation.source_scores import choose_best, rank_sources
from pipeline.data.coco import load_coco
from pipeline.data.datasets import get_split
from pipeline.io import write_json
from annotation.server import project_token
from pipeline.stages.annotate import annotation_source


def run(cfg) -> dict:
    a = cfg.annotation
    client = connect(f"http://{a.host}:{a.port}", project_token(a))
    split = get_split(cfg.dataset, a.split)
    pid = tasks.find_project(client, a.project)
    coco = annotation_source(cfg, split)[2]
    images = {im["id"]: im for im in coco["images"]}
    out = Path(cfg.run_dir) / "points.json"
    res = ls_sync.sync(client, pid, Path(cfg.run_dir), images, coco["categories"],
                       split.image_root, out, int(a.points_per_box))
    print(f"\n{count(res['instances'], 'instance')} with points on "
          f"{count(res['images'], 'image')} -> {out}\n"
          f"{count(res['annotated'], 'task')} of {res['tasks']} annotated by "
          f"{count(res['annotators'], 'annotator')}; {count(res['skipped'], 'task')} skipped "
          f"(not in points.json); who did what, how long: {out.with_name(ls_sync.TASKS)}\n"
          f"{res['dropped_points']} point(s) of deleted boxes dropped; {res['fewer_points']} "
          f"box(es) with fewer than {a.points_per_box} points flagged (fewer_points)\n"
          f"train on them: python -m pipeline stage=maskrcnn supervision=points "
          f"supervision.annotations={out}\n")
    res["sources"] = score_sources(a, load_coco(out), Path(cfg.run_dir))
    return res


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def score_sources(a, points: dict, run_dir: Path) -> list[dict]:
    """Rank the configured pseudo-label sources by the synced points; print and keep the table."""
    if not points["annotations"]:
        return []
    found = {name: Path(p) for name, p in a.get("sources", {}).items() if Path(p).is_file()}
    missing = sorted(set(a.get("sources", {})) - set(found))
    rows = rank_sources(points, {n: load_coco(p, f"source {n!r}") for n, p in found.items()})
    for r in rows:
        r["file"] = str(found[r["source"]])
    best, why = choose_best(rows, int(a.get("best_min_points", 200)),
                            int(a.get("best_min_images", 5)))
    if best is not None:
        best["best"] = True
    write_json(run_dir / "source_scores.json", rows, indent=1)
    print("| pseudo-label source | mask AP from the points | its score threshold (masks kept, "
          "of them no object) | points its masks label as the annotators did | instances "
          "with a mask |\n|---|---:|---|---:|---:|")
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.1%} of {r['points']}"
        ap = "-" if r.get("ap") is None else f"{r['ap']:.1f}"
        thr = "-" if r.get("threshold") is None else \
            f"{r['threshold']:.2f} ({r['kept']}, {r['false_positives']})"
        print(f"| {r['source']} | {ap} | {thr} | {acc} | {r['matched']} of {r['instances']} |")
    if missing:
        print(f"(not found, not scored: {', '.join(missing)})")
    if best is not None:
        print(f"\nbest: {best['source']}; pre-annotate the unlabelled tasks from it with "
              f"`make annotate ARGS=annotation.source=best`\n")
    elif rows:
        print(f"\nno best source yet: {why}\n")
    return rows
