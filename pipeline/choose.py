"""Which pseudo-label source to hand on, from no ground truth: the one the others agree with.

The candidates are every source of masks on the same images: the free masks, SOLO's rounds,
each no-learning baseline. None is trusted a priori; each is judged by the others. Two
sources agree on an image set as much as one's masks, ranked by their scores, predict the
other's masks: the mask AP of one against the other taken as ground truth (COCOeval, IoU
0.50:0.95), averaged both ways so the measure is symmetric. The sources are then ranked by
the principal eigenvector of that agreement matrix: the Spectral Meta-Learner of Parisi,
Strino, Nadler and Kluger ("Ranking and combining multiple predictors without labeled data",
PNAS 111(4), 2014, Sec. "Ranking classifiers"), which shows that under conditionally
independent errors the off-diagonal agreement matrix is rank one, its leading eigenvector's
entries ordering the predictors by accuracy. It is also the idea of STAPLE (Warfield, Zou and
Wells, IEEE TMI 23(7), 2004) for segmentations: a rater's quality is read from the consensus
of the others.

What this cannot see: sources whose errors are alike vote for each other (two thresholds of
the same brightness; SOLO's rounds, trained from the free masks). Each source's weight in the
consensus is therefore divided among its family (`families`: sources made by one method
share it), so a family counts once however many files it wrote; a source is never compared
with its own family. A family alone (no other family to judge it) cannot be judged: with
fewer than two families the chooser keeps the first source and says why.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.coco import AGNOSTIC_CATEGORY
from pipeline.eval.coco_eval import evaluate
from pipeline.provenance import file_identity


def align(sources: dict[str, dict]) -> dict[str, dict]:
    """The sources on the images they all hold, matched by file name (each source may number
    its images its own way), renumbered to the first source's image ids."""
    names = [im["file_name"] for im in next(iter(sources.values()))["images"]]
    common = set(names)
    for coco in sources.values():
        common &= {im["file_name"] for im in coco["images"]}
    first = next(iter(sources.values()))
    ids = {im["file_name"]: im["id"] for im in first["images"] if im["file_name"] in common}
    images = [im for im in first["images"] if im["file_name"] in common]
    out = {}
    for name, coco in sources.items():
        to = {im["id"]: ids[im["file_name"]] for im in coco["images"] if im["file_name"] in ids}
        anns = [dict(a, image_id=to[a["image_id"]], category_id=1)
                for a in coco["annotations"] if a["image_id"] in to]
        out[name] = {"images": images, "annotations": anns, "categories": [AGNOSTIC_CATEGORY]}
    return out


def as_ground_truth(coco: dict) -> dict:
    """A source's masks as ground truth for COCOeval (every mask an object, none a crowd)."""
    anns = [{k: v for k, v in a.items() if k not in ("score", "embedding")}
            | {"iscrowd": 0, "id": i} for i, a in enumerate(coco["annotations"], start=1)]
    return dict(coco, annotations=anns)


def pair_ap(pred: dict, ref: dict) -> float:
    """Mask AP (0-100) of `pred`'s masks, ranked by score, against `ref`'s as ground truth."""
    if not ref["annotations"]:
        return 0.0
    return float(evaluate(as_ground_truth(ref), pred["annotations"],
                          iou_types=("segm",))["segm"]["AP"])


def agreement_matrix(sources: dict[str, dict]) -> np.ndarray:
    """A[i, j] = the mean of AP(i against j) and AP(j against i); the diagonal is 0."""
    names = list(sources)
    n = len(names)
    ap = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                ap[i, j] = pair_ap(sources[names[i]], sources[names[j]])
    return (ap + ap.T) / 2


def spectral_scores(agree: np.ndarray, family: list[str]) -> np.ndarray:
    """Each source's weight in the leading eigenvector of the agreement matrix with its own
    family's entries zeroed and every column divided by its family's size (a family votes
    once), scaled so the entries sum to 1. Power iteration from the uniform vector; the
    matrix is non-negative, so the vector stays non-negative (Perron-Frobenius)."""
    n = len(family)
    size = {f: family.count(f) for f in family}
    m = agree.astype(float).copy()
    for i in range(n):
        for j in range(n):
            if family[i] == family[j]:
                m[i, j] = 0.0
        m[:, i] /= size[family[i]]
    v = np.full(n, 1.0 / n)
    for _ in range(200):
        w = m @ v
        if w.sum() <= 0:
            return np.zeros(n)
        w /= w.sum()
        if np.abs(w - v).max() < 1e-10:
            break
        v = w
    return w


def choose(sources: dict[str, dict], families: dict[str, str] | None = None) -> dict:
    """{'winner', 'scores' (source -> share of the consensus), 'agreement' (source -> source
    -> mean pair AP), 'families', 'images', 'why'}. `sources`: name -> COCO dict on the same
    images; `families`: name -> family (default: each source its own)."""
    if not sources:
        raise ValueError("no pseudo-label source to choose from")
    aligned = align(sources)
    names = list(aligned)
    fam = [(families or {}).get(n, n) for n in names]
    agree = agreement_matrix(aligned)
    table = {a: {b: round(float(agree[i, j]), 2) for j, b in enumerate(names) if j != i}
             for i, a in enumerate(names)}
    n_images = len(next(iter(aligned.values()))["images"])
    base = {"agreement": table, "families": dict(zip(names, fam)), "images": n_images}
    if len(set(fam)) < 2:
        return base | {"winner": names[0], "scores": {n: None for n in names},
                       "why": f"one family of sources ({fam[0]}): nothing independent to "
                              f"judge it by; kept {names[0]!r}"}
    scores = spectral_scores(agree, fam)
    order = np.argsort(-scores, kind="stable")
    win, second = names[order[0]], names[order[1]]
    others = [b for j, b in enumerate(names) if fam[j] != fam[order[0]]]
    mean_other = np.mean([table[win][b] for b in others])
    why = (f"{win!r} has the largest share of the consensus ({scores[order[0]]:.2f}, next "
           f"{second!r} {scores[order[1]]:.2f}): its masks and those of the other methods "
           f"predict each other at {mean_other:.1f} mask AP on average over {n_images} images")
    return base | {"winner": win, "scores": {n: round(float(s), 4) for n, s in
                                             zip(names, scores)}, "why": why}


def describe(result: dict) -> str:
    """Markdown: each source's share of the consensus, the pick and why."""
    lines = ["| pseudo-label source | family | share of the consensus | mean agreement with "
             "the other families (mask AP) |", "|---|---|---:|---:|"]
    fam = result["families"]
    for name, share in result["scores"].items():
        others = [v for b, v in result["agreement"][name].items() if fam[b] != fam[name]]
        mean = sum(others) / len(others) if others else float("nan")
        pick = " **(chosen)**" if name == result["winner"] else ""
        lines.append(f"| {name}{pick} | {fam[name]} | "
                     f"{'-' if share is None else f'{share:.2f}'} | {mean:.1f} |")
    lines.append(f"\nchosen pseudo-labels (no ground truth used): {result['winner']} -> "
                 f"{result.get('chosen', '')}\nwhy: {result['why']}")
    if result.get("not_found"):
        lines.append("not found, not weighed: " + "; ".join(result["not_found"]))
    return "\n".join(lines)


def stale_inputs(result: dict) -> list[str]:
    """The sources of a written choice (choice.json) that changed or went since it was made."""
    return [name for name, (path, ident) in result.get("inputs", {}).items()
            if file_identity(path) != ident]
