"""Benchmark: a simulated annotation run in the real Label Studio UI, before and after.

Each condition is a pre-annotation file of the sample's training images (made by `make
pseudo-labels`); for the first --tasks images a scripted headless browser, with ground truth
as the annotator (`bench/annotator/oracle.py`), flips wrong point labels, deletes boxes on no
object, draws the missing boxes and places their points, submits; the project is synced as
`make annotate-sync` does and the synced points scored against ground truth.

    .venv/bin/python bench/annotation_session.py [--tasks 8] \
        [--source NAME=path/to/coco.json ...] [--work-dir outputs/cpu_sample] [--data-dir data]

The assistant row (--assistant RUN): a point-supervised Mask R-CNN trained on the other
training images, e.g.
    python bench/annotation_session.py --write-heldout heldout.json
    python -m pipeline stage=maskrcnn supervision=points supervision.annotations=heldout.json \
        supervision.agnostic=true run_name=assistant_heldout
    python bench/annotation_session.py --assistant outputs/cpu_sample/assistant_heldout

Default conditions: `before` = SOLO's filtered pseudo-labels (what `make annotate` imported
when the annotators' issue was filed), `after` = the free masks (the source that scores best
on the sample). Printed per condition: edits / clicks / keys / drags per task (median and
mean), scripted browser seconds per task, annotator seconds by the cost model of
`compare.cost` (a drawn box 7 s, a placed or flipped point 0.9 s, a deleted box 0.9 s: an
assumption, no published figure), synced point-label accuracy and re-attached points.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
from pathlib import Path

from common import ROOT, record

# chosen on the sample's val split with --plan-only (README)
AFTER_MIN_SCORE = 0.7


def filtered(coco: dict, images: list[dict], min_score: float) -> dict:
    from pipeline.data.coco import scored_at_least, subset_images
    return scored_at_least(subset_images(coco, [im["id"] for im in images]), min_score)


def plan_only(work: Path, root: Path, split: str, min_scores: list[float], points: int):
    """Planned edits per image for each source and score threshold, no browser: how the
    pre-annotation source and `annotation.min_score` are chosen (on val)."""
    import numpy as np
    from annotator.oracle import plan_task
    from annotator.session import truth_masks
    from annotation.tasks import make_task
    from pipeline.data.coco import annotations_by_image, load_coco, scored_at_least

    gt = load_coco(root / "sample" / "annotations" / f"instances_{split}.json")
    sources = {"free masks": work / "freemask" / f"free_masks_{split}.json",
               "SOLO round 1": work / "solo" / "round1" / f"predictions_{split}.json",
               "SOLO round 2": work / "solo" / "round2" / f"predictions_{split}.json"}
    if split == "train":
        sources["SOLO pseudo-labels"] = work / "solo" / "pseudo_labels.json"
    print(f"\nplanned edits per image, {split} split ({len(gt['images'])} images), "
          f"{points} points per box\n")
    print("| source | min score | boxes / image | edits mean | edits median | deleted boxes | "
          "flipped points | drawn boxes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    gt_by_image = annotations_by_image(gt)
    truths = {im["id"]: truth_masks(gt_by_image[im["id"]], im) for im in gt["images"]}
    for name, path in sources.items():
        coco = load_coco(path, name)
        for low in min_scores:
            by = annotations_by_image(scored_at_least(coco, low))
            rows = []
            for im in gt["images"]:
                anns = by.get(im["id"], [])
                result = make_task(im, anns, "", points, 0, {1: "object"},
                                   "v")["predictions"][0]["result"]
                p = plan_task(result, truths[im["id"]], im["width"], im["height"], points,
                              np.random.default_rng([0, im["id"]]))
                rows.append((len(anns), p.edits, len(p.delete), len(p.relabel), len(p.draw)))
            r = np.array(rows, float)
            print(f"| {name} | {low:g} | {r[:, 0].mean():.1f} | {r[:, 1].mean():.1f} | "
                  f"{np.median(r[:, 1]):.0f} | {r[:, 2].mean():.1f} | {r[:, 3].mean():.1f} | "
                  f"{r[:, 4].mean():.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--work-dir", default=str(ROOT / "outputs" / "cpu_sample"))
    ap.add_argument("--data-dir", default=str(ROOT / "data"), help="holds sample/")
    ap.add_argument("--source", action="append", default=[],
                    help="NAME=coco.json[@min_score] (repeatable); default: before/after")
    ap.add_argument("--assistant", default=None,
                    help="a trained point-supervised Mask R-CNN run: adds the condition "
                         "'after + assistant' (train it on images other than the tasks')")
    ap.add_argument("--write-heldout", default=None, metavar="FILE",
                    help="write the ground truth of the training images other than the "
                         "tasks' to FILE (to train the assistant on) and stop")
    ap.add_argument("--plan-only", action="store_true",
                    help="no browser: planned edits per source and min score on --split")
    ap.add_argument("--split", default="val")
    ap.add_argument("--min-scores", default="0,0.3,0.5,0.7,0.9")
    args = ap.parse_args()
    work, root = Path(args.work_dir), Path(args.data_dir).resolve()
    if args.write_heldout:
        from pipeline.data.coco import load_coco, save_coco
        gt = load_coco(root / "sample" / "annotations" / "instances_train.json")
        save_coco(Path(args.write_heldout), filtered(gt, gt["images"][args.tasks:], 0.0))
        return print(f"{len(gt['images']) - args.tasks} images -> {args.write_heldout}")
    if args.plan_only:
        return plan_only(work, root, args.split,
                         [float(x) for x in args.min_scores.split(",")], args.points)
    from annotation import server as ls_server
    from annotator import session
    from annotation.client import connect
    from pipeline.data.coco import load_coco

    after = f"{work / 'freemask' / 'free_masks_train.json'}@{AFTER_MIN_SCORE}"
    sources = dict(s.split("=", 1) for s in args.source) or {
        "before: SOLO pseudo-labels": str(work / "solo" / "pseudo_labels.json"),
        f"after: free masks >= {AFTER_MIN_SCORE}": after}
    if args.assistant and not args.source:
        sources[f"after: free masks >= {AFTER_MIN_SCORE} + assistant"] = after
    gt = load_coco(root / "sample" / "annotations" / "instances_train.json")
    images = gt["images"][:args.tasks]
    gt = filtered(gt, images, 0.0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        token, password = secrets.token_hex(20), "pw-" + secrets.token_hex(8)
        srv = ls_server.start(Path(tmp) / "ls", ls_server.free_port(), token,
                              "admin@weakseg.local", password, document_root=root)
        srv.username, srv.password = "admin@weakseg.local", password
        try:
            client = connect(srv.url, token)
            for k, (name, spec) in enumerate(sources.items()):
                path, _, low = spec.partition("@")
                pre = filtered(load_coco(Path(path), f"pre-annotations {name!r}"), images,
                               float(low or 0))
                results[name] = session.run(
                    srv, client, f"bench {k} {secrets.token_hex(2)}", pre, gt,
                    root / "sample" / "train", root, Path(tmp) / f"condition{k}",
                    n_points=args.points,
                    assistant=Path(args.assistant) if "assistant" in name else None)
        finally:
            srv.stop()
    print(f"\n{args.tasks} tasks of the sample's train split, {args.points} points per box\n")
    print("| pre-annotations | boxes / task | edits / task (median, mean) | deleted boxes | "
          "flipped points | drawn boxes | placed points | assistant's points flipped | "
          "clicks | keys | drags | browser s / task | annotator s / task (cost model) | "
          "synced labels right | objects boxed | re-attached points | edits not done |")
    print("|---|" + "---:|" * 16)
    rows = []
    for name, r in results.items():
        t = r["tasks"]

        def mean(k):
            return statistics.mean(x[k] for x in t)
        cost = statistics.mean(7.0 * x["drawn_boxes"] + 0.9 * (
            x["placed_points"] + x["flipped_points"] + x["assistant_flips"]
            + x["deleted_boxes"]) for x in t)
        s = r["score"]
        line = (f"| {name} | {mean('boxes'):.1f} | {statistics.median(x['edits'] for x in t):.0f}"
                f", {mean('edits'):.1f} | {mean('deleted_boxes'):.1f} | "
                f"{mean('flipped_points'):.1f} | {mean('drawn_boxes'):.1f} | "
                f"{mean('placed_points'):.1f} | {mean('assistant_flips'):.1f} | "
                f"{mean('clicks'):.1f} | {mean('keys'):.1f} | {mean('drags'):.1f} | "
                f"{mean('seconds'):.1f} | {cost:.0f} | "
                f"{s['points_right']}/{s['points']} | {s['boxes_matched']}/{s['objects']} | "
                f"{r['reattached_points']} | {sum(len(x['skipped']) for x in t)} |")
        print(line)
        rows.append((name, line))
    out = ROOT / "bench" / "results" / "annotation_session_detail.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    record("annotation_session", rows)
    print(f"\nper task: {out}")


if __name__ == "__main__":
    main()
