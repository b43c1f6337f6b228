"""Benchmark: a simulated annotation run in the real Label Studio UI, before and after.

Each condition is a pre-annotation file of the sample's training images (made by `make
pseudo-labels`); for the first --tasks images a scripted headless browser, with ground truth
as the annotator (`bench/annotator/oracle.py`), flips wrong point labels, deletes boxes on no
object, draws the missing boxes and places their points, submits; the project is synced as
`make annotate-sync` does and the synced points scored against ground truth.

    .venv/bin/python bench/annotation_session.py [--tasks 8] \
        [--source NAME=path/to/coco.json ...] [--work-dir outputs/cpu_sample] [--data-dir data]

The assistant row (--assistant): `pseudo` is the assistant `make annotate` starts for a user
with no point model, a Mask R-CNN trained on the pseudo-labels, no ground truth
(annotation.assistant.pseudo_label_run_dir; `python -m annotation.prepare assistant` trains
it); `points` the point model of annotation.assistant.run_dir; or a run folder, e.g. a
point-supervised Mask R-CNN trained on the other training images' ground truth:
    python bench/annotation_session.py --write-heldout heldout.json
    python -m pipeline stage=maskrcnn supervision=points supervision.annotations=heldout.json \
        supervision.agnostic=true run_name=assistant_heldout
    python bench/annotation_session.py --assistant outputs/cpu_sample/assistant_heldout
--assisted-only runs that row alone; --placement where the assistant puts a drawn box's points
(annotation.assistant.placement). With --plan-only, --assistant adds the assistant's own
detections as a source and the planned edits with it drawing the missed boxes, per placement.

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


def assistant_run(spec: str, work: Path) -> Path:
    """--assistant: `pseudo` (the assistant `make annotate` trains on the pseudo-labels),
    `points` (the point model it serves first when there is one) or a run folder; the
    config's folders are taken relative to --work-dir."""
    if spec not in ("pseudo", "points"):
        return Path(spec)
    from annotation.retrain import compose_stage
    cfg = compose_stage([], "stage=annotate")
    s = cfg.annotation.assistant
    d = work / Path(str(s.pseudo_label_run_dir if spec == "pseudo" else s.run_dir)).relative_to(
        str(cfg.paths.work_dir))
    if not (d / "model.pt").is_file():
        raise SystemExit(f"--assistant {spec}: {d / 'model.pt'} not found; train it with "
                         + ("`python -m annotation.prepare assistant`" if spec == "pseudo"
                            else "`make maskrcnn`"))
    return d


def detections(assistant, images: list[dict], image_root: Path) -> dict:
    """The assistant's own instances on `images` (what it pre-annotates a task with: its box,
    points labelled by its mask), as COCO with their scores: a source like the others."""
    from annotation.assist import Assistant
    from pipeline.data.coco import mask_to_annotation
    from pipeline.data.images import read_rgb
    model = Assistant(assistant)
    anns = []
    for im in images:
        for box, prob, score in model.detect(read_rgb(image_root / im["file_name"]), 0.0):
            if (prob >= 0.5).any():
                x0, y0, x1, y1 = box
                anns.append(mask_to_annotation(prob >= 0.5, im["id"], 1, score=float(score),
                                               id=len(anns) + 1,
                                               bbox=[x0, y0, x1 - x0, y1 - y0]))
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "object"}]}


def plan_only(work: Path, root: Path, split: str, min_scores: list[float], points: int,
              assistant: Path | None = None):
    """Planned edits per image for each source and score threshold, no browser: how the
    pre-annotation source and `annotation.min_score` are chosen (on val). With an assistant:
    its detections are one more source, and each plan is also costed with the assistant
    drawing the missed boxes, for each point placement (annotation.assistant.placement)."""
    import numpy as np
    from annotator.oracle import plan_task
    from annotator.session import truth_masks
    from annotation.assist import PLACEMENTS, labelled_by
    from annotation.protocol import BACKGROUND, OBJECT
    from annotation.tasks import make_task
    from pipeline.data.coco import annotations_by_image, load_coco, scored_at_least, subset_images
    from pipeline.data.images import read_rgb

    gt = load_coco(root / "sample" / "annotations" / f"instances_{split}.json")
    image_root = root / "sample" / split
    sources = {"free masks": work / "freemask" / f"free_masks_{split}.json",
               "FreeSOLO free masks": work / "freemask_freesolo" / f"free_masks_{split}.json",
               "SOLO round 1": work / "solo" / "round1" / f"predictions_{split}.json",
               "SOLO round 2": work / "solo" / "round2" / f"predictions_{split}.json",
               **{b.name: b / f"{b.name}_{split}.json"
                  for b in sorted((work / "baseline").glob("*")) if b.is_dir()}}
    if split == "train":
        sources["SOLO pseudo-labels"] = work / "solo" / "pseudo_labels.json"
    sources = {k: v for k, v in sources.items() if Path(v).is_file()}
    model = None
    if assistant is not None:
        from annotation.assist import Assistant
        sources["assistant's detections"] = detections(assistant, gt["images"], image_root)
        model = Assistant(assistant)
    print(f"\nplanned edits per image, {split} split ({len(gt['images'])} images), "
          f"{points} points per box" + (f", assistant {assistant}" if model else "") + "\n")
    extra = [*(f"edits with the assistant ({k}): mean, median" for k in PLACEMENTS),
             "the assistant labels every point (uniform): mean, median"] if model else []
    print("| source | min score | boxes / image | edits mean | edits median | deleted boxes | "
          "flipped points | drawn boxes |" + "".join(f" {e} |" for e in extra))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra))
    gt_by_image = annotations_by_image(gt)
    truths = {im["id"]: truth_masks(gt_by_image[im["id"]], im) for im in gt["images"]}
    probs = {}   # (image id, box) -> the assistant's mask for a box drawn there

    def assisted_edits(im, plan) -> list[int]:
        out = []
        for placement, place in PLACEMENTS.items():
            n = len(plan.delete) + len(plan.relabel)
            for d in plan.draw:
                key = (im["id"], d.box)
                if key not in probs:
                    probs[key] = model.masks_for_boxes(read_rgb(image_root / im["file_name"]),
                                                       [d.box])[0]
                d.resolve([(x, y, OBJECT if obj else BACKGROUND)
                           for x, y, obj in place(probs[key], d.box, points)])
                n += 1 + len(d.flips)
            out.append(n)
        return out

    def plan(im, anns):
        result = make_task(im, anns, "", points, 0, {1: "object"}, "v")["predictions"][0]["result"]
        return plan_task(result, truths[im["id"]], im["width"], im["height"], points,
                         np.random.default_rng([0, im["id"]]), assisted=model is not None)

    for name, path in sources.items():
        coco = path if isinstance(path, dict) else load_coco(path, name)
        for low in min_scores:
            kept = scored_at_least(subset_images(coco, truths), low)
            by = annotations_by_image(kept)
            relabelled = annotations_by_image(labelled_by(model, dict(kept, images=gt["images"]),
                                                          image_root)) if model else {}
            rows = []
            for im in gt["images"]:
                anns = by.get(im["id"], [])
                p = plan(im, anns)
                unassisted = len(p.delete) + len(p.relabel) + len(p.draw) * (1 + points)
                rows.append((len(anns), unassisted, len(p.delete), len(p.relabel), len(p.draw),
                             *(assisted_edits(im, p) if model else []),
                             *(assisted_edits(im, plan(im, relabelled.get(im["id"], [])))[-1:]
                               if model else [])))
            r = np.array(rows, float)
            print(f"| {name} | {low:g} | {r[:, 0].mean():.1f} | {r[:, 1].mean():.1f} | "
                  f"{np.median(r[:, 1]):.0f} | {r[:, 2].mean():.1f} | {r[:, 3].mean():.1f} | "
                  f"{r[:, 4].mean():.1f} |"
                  + "".join(f" {r[:, c].mean():.1f}, {np.median(r[:, c]):.0f} |"
                            for c in range(5, r.shape[1])))


def row(name: str, r: dict) -> str:
    """One condition's line of the table."""
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
    return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--work-dir", default=str(ROOT / "outputs" / "cpu_sample"))
    ap.add_argument("--data-dir", default=str(ROOT / "data"), help="holds sample/")
    ap.add_argument("--source", action="append", default=[],
                    help="NAME=coco.json[@min_score] (repeatable); default: before/after")
    ap.add_argument("--assistant", default=None,
                    help="pseudo | points | a trained Mask R-CNN run folder: adds the condition "
                         "'after + assistant' (a point model: trained on images other than "
                         "the tasks')")
    ap.add_argument("--assisted-only", action="store_true",
                    help="only the condition with the assistant")
    ap.add_argument("--placement", default=None,
                    help="where the assistant puts a drawn box's points (uncertain | uniform, "
                         "or both comma-separated: one condition each); default: "
                         "annotation.assistant.placement")
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
    assistant = assistant_run(args.assistant, work) if args.assistant else None
    if args.plan_only:
        return plan_only(work, root, args.split,
                         [float(x) for x in args.min_scores.split(",")], args.points, assistant)
    if args.placement is None:
        from annotation.retrain import compose_stage
        args.placement = str(compose_stage([], "stage=annotate").annotation.assistant.placement)
    from annotation import server as ls_server
    from annotator import session
    from annotation.client import connect
    from pipeline.data.coco import load_coco

    after = f"{work / 'freemask' / 'free_masks_train.json'}@{AFTER_MIN_SCORE}"
    sources = dict(s.split("=", 1) for s in args.source) or {
        "before: SOLO pseudo-labels": str(work / "solo" / "pseudo_labels.json"),
        f"after: free masks >= {AFTER_MIN_SCORE}": after}
    assisted = {f"after: free masks >= {AFTER_MIN_SCORE} + assistant ({args.assistant}, "
                f"{placement} points)": placement for placement in args.placement.split(",")}
    if assistant and not args.source:
        sources = {**({} if args.assisted_only else sources), **{k: after for k in assisted}}
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
                    assistant=assistant if name in assisted else None,
                    placement=assisted.get(name, "uniform"))
                print(row(name, results[name]), flush=True)
        finally:
            srv.stop()
    print(f"\n{args.tasks} tasks of the sample's train split, {args.points} points per box\n")
    print("| pre-annotations | boxes / task | edits / task (median, mean) | deleted boxes | "
          "flipped points | drawn boxes | placed points | assistant's points flipped | "
          "clicks | keys | drags | browser s / task | annotator s / task (cost model) | "
          "synced labels right | objects boxed | re-attached points | edits not done |")
    print("|---|" + "---:|" * 16)
    rows = [(name, row(name, r)) for name, r in results.items()]
    for _, line in rows:
        print(line)
    out = ROOT / "bench" / "results" / "annotation_session_detail.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    record("annotation_session", rows)
    print(f"\nper task: {out}")


if __name__ == "__main__":
    main()
