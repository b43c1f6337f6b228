"""Benchmark: a simulated annotation campaign, mask AP of the point model on the test split
against the annotator's cumulative hours, for two protocols (ground truth plays the
annotator, no browser).

- `pointsup`, PointSup's protocol (Cheng et al., CVPR 2022, Sec. 4-5): images in random order
  (seeded), no assistant; the annotator draws a box and clicks N points per object, each
  image costing `compare.cost` for points (box_s + N point_s per object,
  pipeline/eval/cost.py). After each round a point-supervised Mask R-CNN trains on the
  annotated images only (`supervision=points`, points simulated from their ground truth).
- `ours`: the labelling assistant `make annotate` starts for a user, a Mask R-CNN trained on
  the pseudo-labels (annotation.assistant.pseudo_label_run_dir, no ground truth), serves the
  first round; each round annotates the images the served model is least certain of (its
  mean mask certainty over its detections, the score the ML backend gives a task); an image
  costs the edits that turn its pre-annotation (annotation.source >= annotation.min_score)
  into the truth, with the assistant placing and labelling the points of every box drawn for
  a missed object (the planner of `bench/annotation_session.py --plan-only`,
  bench/annotator/oracle.py), in seconds by the same cost model (Plan.seconds). Between
  rounds the served model is fine-tuned (as annotation/retrain.py does, `maskrcnn.train.init`
  = the served model.pt) on the points the annotated images sync to (the pre-placed boxes
  kept, their points' labels corrected, the drawn boxes with their points) plus N points per
  pseudo-label on every image not annotated yet, labelled by the pseudo-mask.

Both protocols train `--iters` iterations per round (150; the assistant's retraining runs
annotation.assistant.retrain_iter, 200), each round starting from the protocol's previous
model (PointSup's first round from the backbone); `ours` starts from the assistant trained
annotation.assistant.train_iter iterations on the pseudo-labels. Round 0 of `ours` is the assistant itself at 0 hours. The
reference is the full-mask Mask R-CNN of `make compare` (its comparison.csv, else the compare
table in docs/results.md), never retrained here: its mask AP and hours.

    python bench/campaign.py [--rounds 8,24,48,96] [--iters 150] [--protocols pointsup,ours]
        [--stop-after N] [--report-only] [--name campaign] [--plot docs/campaign.png]
        [hydra overrides]

Each round is a training stage run in outputs/<experiment>/<name>/<protocol>/round<k> (its
weights guard: a rerun reuses them when made from the same inputs); --stop-after N stops
after N rounds that had to train (rerun to continue). Writes <name>/campaign.json and
campaign.md, and the plot.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # before bench/: bench/annotation.py is not the package

PROTOCOLS = ("pointsup", "ours")
NAMES = {"pointsup": "PointSup's protocol (random order, box + points, no assistant)",
         "ours": "ours (assistant from the pseudo-labels, uncertainty queue, edits)"}
GOAL_AP, GOAL_HOURS = 0.95, 0.10   # of the full-mask model's AP and hours (issue 29)
FULL = "Mask R-CNN, full masks"    # the reference row of the compare table


# ---------------------------------------------------------------- the campaign's bookkeeping

def round_sizes(spec: str, n_images: int) -> list[int]:
    """'8,16,32,48' -> [8, 16, 32, 48]: annotated images after each round, increasing, at
    most the training images."""
    sizes = [int(s) for s in str(spec).split(",") if s.strip()]
    if not sizes or sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])) \
            or sizes[-1] > n_images:
        raise SystemExit(f"--rounds {spec}: increasing image counts from 1 to {n_images} "
                         f"(the training images), e.g. 8,16,32,48")
    return sizes


def random_order(image_ids, seed: int) -> list[int]:
    """PointSup's queue: the images in a seeded random order."""
    import numpy as np
    ids = sorted(image_ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def uncertainty_order(certainty: dict[int, float]) -> list[int]:
    """Our queue: least certain first (ties: lower image id), as Label Studio's uncertainty
    sampling serves tasks by their prediction score."""
    return sorted(certainty, key=lambda i: (certainty[i], i))


@dataclass
class Ledger:
    """Which images are annotated, in which round, and the annotator's seconds so far."""
    annotated: list[int] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def next_images(self, order: list[int], size: int) -> list[int]:
        """The first images of `order` not annotated yet, enough to reach `size`."""
        done = set(self.annotated)
        todo = [i for i in order if i not in done][:size - len(self.annotated)]
        if len(todo) < size - len(self.annotated):
            raise ValueError(f"{size} images asked, {len(done) + len(todo)} available")
        return todo

    def add(self, images: list[int], seconds: dict[int, float]) -> dict:
        """Record a round: its new images and their seconds; returns its row (cumulative)."""
        if set(images) & set(self.annotated) or len(set(images)) != len(images):
            raise ValueError("an image is annotated once")
        self.annotated += images
        spent = sum(float(seconds[i]) for i in images)
        total = (self.rows[-1]["seconds"] if self.rows else 0.0) + spent
        row = {"round": len(self.rows) + 1, "images": len(self.annotated), "new": list(images),
               "round_seconds": spent, "seconds": total, "hours": total / 3600}
        self.rows.append(row)
        return row


def goal_reached(rows: list[dict], full_ap: float, full_hours: float) -> dict | None:
    """The first row at >= 95% of the full-mask AP within <= 10% of its hours, or None."""
    for r in rows:
        if r.get("mask_AP") is not None and r["mask_AP"] >= GOAL_AP * full_ap \
                and r["hours"] <= GOAL_HOURS * full_hours:
            return r
    return None


# ---------------------------------------------------------------- the pipeline's parts

def compose(overrides: list[str]):
    from annotation.retrain import compose_stage
    return compose_stage(overrides, "stage=maskrcnn", "supervision=points")


def train_round(overrides, run_dir: Path, annotations: Path, init, iters: int,
                split: str) -> Path:
    """The training stage on one round's points (fine-tuned from `init` when given), as
    annotation/retrain.py runs it, evaluated on `split`; returns the run folder."""
    from annotation.pipeline_run import run_pipeline
    from annotation.prepare import student_args
    base = [o for o in overrides
            if not o.startswith(("stage=", "run_name=", "hydra.run.dir=", "supervision",
                                 "model="))]
    # fine-tuning warms up as annotation/retrain.py does; from the backbone (PointSup's first
    # round), the experiment's warm-up and the gradient norm clipped at 1 (a 15-iteration
    # warm-up without clipping diverged on 8 images: loss nan at iteration 33)
    start = {"warmup_iter": min(iters // 10, 50)} if init else {"grad_clip": 1.0}
    run_pipeline([*base, *student_args("maskrcnn", "points", [split],
                                       init=init if init else "null", max_iter=iters, **start),
                  f"supervision.annotations={annotations}", "supervision.agnostic=true",
                  f"hydra.run.dir={run_dir}"])
    return run_dir


def assistant_round0(overrides, split: str) -> Path:
    """The pseudo-label assistant (`python -m annotation.prepare assistant`, trained when
    missing, its weights reused when made from the same pseudo-labels), evaluated on split."""
    from annotation.pipeline_run import run_pipeline
    from annotation.prepare import assistant_args, assistant_stage
    cfg = assistant_stage(overrides)
    if cfg.model != "maskrcnn":
        raise SystemExit(f"annotation.assistant.model={cfg.model}: the campaign's rounds "
                         f"fine-tune Mask R-CNN; run it with the Mask R-CNN assistant")
    run_pipeline([*assistant_args(overrides, [split]), f"hydra.run.dir={cfg.run_dir}"])
    return Path(cfg.run_dir)


def stamp_of(run_dir: Path) -> str | None:
    from pipeline.provenance import stamp_of as stamp
    return stamp(run_dir)


def mask_ap(run_dir: Path, split: str) -> float:
    from pipeline.io import read_json
    return float(read_json(run_dir / "metrics.json")[split]["metrics"]["segm"]["AP"])


def certainties(model_dir: Path, infos: list[dict], image_root: Path, threshold: float,
                cache: Path) -> dict[int, float]:
    """Each image's certainty under the model of `model_dir`: the mean over its detections
    (score >= threshold) of |2p - 1| in the box (ml_backend.box_certainty), 0 without one;
    what the ML backend scores a task with. Kept in `cache` with what made it."""
    from annotation.assist import Assistant
    from annotation.ml_backend import task_certainty
    from pipeline.data.images import read_rgb
    from pipeline.io import read_json, write_json
    from pipeline.provenance import file_identity, fingerprint, image_identities
    key = fingerprint("certainty", file_identity(model_dir / "model.pt"), threshold,
                      image_identities(image_root, infos))
    if cache.is_file() and read_json(cache).get("key") == key:
        return {int(k): v for k, v in read_json(cache)["certainty"].items()}
    model, out = Assistant(model_dir), {}
    for im in infos:
        found = model.detect(read_rgb(image_root / im["file_name"]), threshold)
        out[im["id"]] = task_certainty([(prob, box) for box, prob, _ in found])
    write_json(cache, {"key": key, "certainty": out})
    return out


def annotate_with_assistant(model_dir: Path, infos: list[dict], pre: dict, gt: dict,
                            image_root: Path, n_points: int, placement: str, seed: int,
                            cost) -> tuple[dict[int, float], list[dict]]:
    """The edits of each image (the oracle's plan of its pre-annotation task, boxes for missed
    objects drawn for the assistant of `model_dir`, its points checked), in seconds, and the
    instances the annotated tasks sync to."""
    import numpy as np
    from annotation.assist import PLACEMENTS, Assistant
    from annotation.protocol import BACKGROUND, OBJECT, results_to_instances
    from annotation.tasks import make_task
    from bench.annotator.oracle import carried_out, plan_task
    from bench.annotator.session import truth_masks
    from pipeline.data.coco import annotations_by_image
    from pipeline.data.images import read_rgb
    model = Assistant(model_dir)
    pre_by, gt_by = annotations_by_image(pre), annotations_by_image(gt)
    seconds, synced = {}, []
    for im in infos:
        w, h = im["width"], im["height"]
        result = make_task(im, pre_by.get(im["id"], []), "", n_points, seed, {1: "object"},
                           "v")["predictions"][0]["result"]
        plan = plan_task(result, truth_masks(gt_by.get(im["id"], []), im), w, h, n_points,
                         np.random.default_rng([0, im["id"]]), assisted=True)
        if plan.draw:
            probs = model.masks_for_boxes(read_rgb(image_root / im["file_name"]),
                                          [d.box for d in plan.draw])
            for d, prob in zip(plan.draw, probs):
                d.resolve([(x, y, OBJECT if obj else BACKGROUND)
                           for x, y, obj in PLACEMENTS[placement](prob, d.box, n_points)])
        seconds[im["id"]] = plan.seconds(cost)
        inst, _ = results_to_instances(carried_out(result, plan, w, h), w, h, {"object": 1},
                                       n_points)
        synced += [dict(a, image_id=im["id"]) for a in inst]
    return seconds, synced


def mixed_points(synced: list[dict], pseudo: dict, annotated: set[int], infos: list[dict],
                 n_points: int, seed: int) -> dict:
    """What `ours` fine-tunes on: the synced points of the annotated images, and N points per
    pseudo-label (labelled by its mask) on every other training image."""
    from pipeline.data.coco import make_coco, subset_images
    from pipeline.data.points import points_from_masks
    rest = [im["id"] for im in infos if im["id"] not in annotated]
    guessed = points_from_masks(subset_images(pseudo, rest), n=n_points, seed=seed)
    anns = [dict(a, id=k + 1, category_id=1)
            for k, a in enumerate([*synced, *guessed["annotations"]])]
    return make_coco(infos, anns, [{"id": 1, "name": "object"}],
                     {"description": "campaign: annotated points + pseudo-label points"})


def reference(work: Path, images: int) -> dict:
    """The full-mask Mask R-CNN of `make compare`: mask AP and hours from its comparison.csv,
    else from the compare table in docs/results.md (never retrained here)."""
    import csv
    f = work / "compare" / "comparison.csv"
    if f.is_file():
        for r in csv.DictReader(f.open()):
            if r["method"] == FULL and r["status"] == "ok":
                return {"mask_AP": float(r["mask_AP"]), "hours": float(r["annotation_hours"]),
                        "images": images, "from": str(f)}
    doc = ROOT / "docs" / "results.md"
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == FULL and len(cells) > 8:
            return {"mask_AP": float(cells[1]), "hours": float(cells[8]), "images": images,
                    "from": f"{doc.relative_to(ROOT)} (the compare table)"}
    raise SystemExit(f"no full-mask Mask R-CNN in {f} or {doc}: run `make compare` first")


# ---------------------------------------------------------------- the campaign

def run_protocol(protocol, overrides, cfg, sizes, iters, split, stop, out: Path) -> list[dict]:
    """One protocol's rounds; `stop` is [trainings left] (None: no limit), shared."""
    from pipeline.data.coco import load_coco, save_coco, subset_images
    from pipeline.data.datasets import get_split
    from pipeline.eval.cost import seconds_per_instance
    from pipeline.io import write_json
    train = get_split(cfg.dataset, "train")
    infos, gt = train.images, train.coco
    a, sv, cost = cfg.annotation, cfg.supervision, cfg.compare.cost
    n_points = int(a.points_per_box)
    folder = out / protocol
    ledger, rows = Ledger(), []
    if protocol == "pointsup":
        per_object = seconds_per_instance("points", cost, n_points)
        objects = {im["id"]: 0 for im in infos}
        for ann in gt["annotations"]:
            objects[ann["image_id"]] += 1
        seconds = {i: per_object * n for i, n in objects.items()}
        order, model = random_order(objects, int(cfg.seed)), None
    else:
        model = assistant_round0(overrides, split)
        rows.append({"round": 0, "images": 0, "new": [], "round_seconds": 0.0, "seconds": 0.0,
                     "hours": 0.0, "mask_AP": mask_ap(model, split), "run": str(model),
                     "stamp": stamp_of(model)})
        if str(a.source) in ("gt", "best"):
            raise SystemExit(f"annotation.source={a.source}: the campaign pre-annotates from a "
                             f"COCO file of pseudo-labels (the experiment's default)")
        pre = load_coco(Path(str(a.source)), "annotation.source")
        from pipeline.data.coco import scored_at_least
        pre = scored_at_least(pre, float(a.min_score))
        pseudo = load_coco(Path(str(cfg_pseudo_labels(overrides))), "the pseudo-labels")
        synced = []
    for k, size in enumerate(sizes, 1):
        if protocol == "ours":
            done = set(ledger.annotated)
            left = [im for im in infos if im["id"] not in done]
            order = uncertainty_order(certainties(
                model, left, train.image_root, float(a.assistant.score_threshold),
                folder / f"round{k}_certainty.json"))
            new = ledger.next_images(order, size)
            picked = set(new)
            seconds, inst = annotate_with_assistant(
                model, [im for im in infos if im["id"] in picked], pre, gt, train.image_root,
                n_points, str(a.assistant.placement), int(a.seed), cost)
            synced += inst
            row = ledger.add(new, seconds)
            data = mixed_points(synced, pseudo, set(ledger.annotated), infos, n_points,
                                int(sv.point_seed))
        else:
            row = ledger.add(ledger.next_images(order, size), seconds)
            data = subset_images(gt, ledger.annotated)   # the stage simulates the points
        f = save_coco(folder / f"round{k}_train.json", data)
        run_dir = folder / f"round{k}"
        trains = not (run_dir / "model.pt").is_file()
        if trains and stop[0] is not None and stop[0] <= 0:
            print(f"{protocol}: stopped before round {k} (--stop-after); rerun to continue",
                  flush=True)
            return rows
        model_init = model / "model.pt" if model is not None else None
        model = train_round(overrides, run_dir, f, model_init, iters, split)
        stop[0] = None if stop[0] is None else stop[0] - trains
        rows.append(dict(row, mask_AP=mask_ap(model, split), run=str(model),
                         stamp=stamp_of(model)))
        write_json(folder / "rounds.json", {"iters": iters, "sizes": sizes, "rows": rows})
    return rows


def recorded(out: Path, protocol: str, iters: int, sizes: list[int]) -> list[dict] | None:
    """A protocol's finished rounds as its last run recorded them (<name>/<protocol>/
    rounds.json), when made with these settings and every round's weights are still the ones
    measured (the run folder's provenance stamp); else None."""
    from pipeline.io import read_json
    f = out / protocol / "rounds.json"
    if not f.is_file():
        return None
    data = read_json(f)
    rows = data["rows"]
    if data["iters"] != iters or data["sizes"] != sizes or \
            [r["images"] for r in rows if r["round"]] != sizes:
        return None
    if any(stamp_of(Path(r["run"])) != r["stamp"] for r in rows):
        return None
    return rows


def cfg_pseudo_labels(overrides):
    """The pseudo-label file the assistant trains on (annotation/prepare.py)."""
    from annotation.prepare import assistant_stage
    return assistant_stage(overrides).supervision.annotations


def table(results: dict, ref: dict) -> str:
    lines = ["| protocol | round | images | annotator s / new image | annotator hours | "
             "% of full-mask hours | mask AP (test) | % of full-mask AP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for protocol, rows in results.items():
        for r in rows:
            ap = r.get("mask_AP")
            per = f"{r['round_seconds'] / len(r['new']):.1f}" if r["new"] else "-"
            lines.append(f"| {protocol} | {r['round']} | {r['images']} | {per} | "
                         f"{r['hours']:.2f} | "
                         f"{100 * r['hours'] / ref['hours']:.1f}% | "
                         + (f"{ap:.1f} | {100 * ap / ref['mask_AP']:.0f}% |" if ap is not None
                            else "not trained | - |"))
    lines.append(f"| full masks (`make compare`) | - | {ref['images']} | "
                 f"{3600 * ref['hours'] / ref['images']:.1f} | {ref['hours']:.2f} | 100% | "
                 f"{ref['mask_AP']:.1f} | 100% |")
    return "\n".join(lines)


def plot(results: dict, ref: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pipeline.io import write_with
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for (protocol, rows), marker in zip(results.items(), "os"):
        pts = [(r["hours"], r["mask_AP"], r["images"]) for r in rows
               if r.get("mask_AP") is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=NAMES[protocol])
        for x, y, n in pts:
            ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axhline(ref["mask_AP"], color="0.3", lw=1, ls="-",
               label=f"full masks, {ref['hours']:.2f} h: {ref['mask_AP']:.1f}")
    ax.axhline(GOAL_AP * ref["mask_AP"], color="0.5", lw=1, ls="--", label="95% of full")
    ax.axvline(GOAL_HOURS * ref["hours"], color="0.5", lw=1, ls=":",
               label="10% of full-mask hours")
    ax.set_xlabel("cumulative annotator hours (cost model; labels: images annotated)")
    ax.set_ylabel("mask AP, test split")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", default="8,24,48,96", help="annotated images after each round")
    ap.add_argument("--iters", type=int, default=150,
                    help="training iterations per round, both protocols (the assistant's "
                         "retraining default, annotation.assistant.retrain_iter, is 200; 150 "
                         "keeps the whole campaign near 15 min on 2 cores)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this many rounds that train (rerun to continue)")
    ap.add_argument("--report-only", action="store_true",
                    help="no training: the table and plot from the rounds recorded")
    ap.add_argument("--name", default="campaign",
                    help="the campaign's folder under the experiment's work_dir (one per set of "
                         "settings: a round's weights are never reused from other inputs)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "campaign.png"))
    args, overrides = ap.parse_known_args(argv)
    os.chdir(ROOT)   # the config's folders are relative to the checkout
    from pipeline.io import write_json, write_text
    cfg = compose(overrides)
    from pipeline.data.datasets import get_split
    n_images = len(get_split(cfg.dataset, "train").images)
    sizes = round_sizes(args.rounds, n_images)
    iters = args.iters
    split = str(cfg.dataset.report_split)
    work = Path(cfg.paths.work_dir)
    ref = reference(work, n_images)
    out = work / args.name
    stop = [args.stop_after]
    protocols = [p for p in args.protocols.split(",") if p]
    for p in protocols:
        if p not in PROTOCOLS:
            raise SystemExit(f"--protocols: {p!r} is none of {', '.join(PROTOCOLS)}")
    if not args.report_only:
        for p in protocols:
            run_protocol(p, overrides, cfg, sizes, iters, split, stop, out)
    results = {p: recorded(out, p, iters, sizes) for p in PROTOCOLS}
    missing = [p for p, rows in results.items() if rows is None]
    if missing:
        print(f"not finished with these settings: {', '.join(missing)}; run "
              f"`python bench/campaign.py --protocols {','.join(missing)}` (table and plot "
              f"once both are done)", flush=True)
        return 0
    text = table(results, ref)
    goals = []
    for p, rows in results.items():
        hit = goal_reached(rows, ref["mask_AP"], ref["hours"])
        goals.append(f"{p}: " + (f"95% of full at round {hit['round']} ({hit['images']} images, "
                                 f"{hit['hours']:.2f} h, {100 * hit['hours'] / ref['hours']:.1f}% "
                                 f"of the full-mask hours)" if hit else
                                 "not at 95% of full within 10% of the full-mask hours"))
    head = (f"{cfg.dataset.name}, {len(sizes)} rounds of {iters} iterations, mask AP on "
            f"{split}; reference: {ref['from']}")
    print(f"\n{head}\n\n{text}\n\n" + "\n".join(goals), flush=True)
    write_json(out / "campaign.json", {"reference": ref, "iters": iters, "rounds": sizes,
                                       "results": results, "goal": goals})
    write_text(out / "campaign.md", f"{head}\n\n{text}\n\n" + "\n".join(goals) + "\n")
    plot(results, ref, Path(args.plot),
         f"a simulated annotation campaign ({cfg.dataset.name}, {iters} iterations a round)")
    print(f"wrote {out / 'campaign.md'}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
