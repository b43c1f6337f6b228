"""A simulated annotation run in the real Label Studio UI: ground truth as the annotator.

A project is made from a pre-annotation file; for each task the oracle plans the edits
(`oracle`), a scripted headless browser carries them out with mouse and hotkeys
and submits (`browser`), then the project is synced as `make annotate-sync` does
and the synced points are scored against the truth. Reports per task: edits, clicks, keys,
drags, seconds in the browser, and for the whole run the share of synced point labels that
are right and the points of deleted boxes that reappeared on another box (must be 0).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from annotation import sync as ls_sync, tasks
from .browser import (Canvas, auto_annotation, carry_out, launch, login, open_task,
                                submit)
from annotation.ml_backend import Backend, serve
from annotation.server import free_port
from .oracle import plan_task, regions, score_synced
from annotation.protocol import point_owner, to_pixels
from pipeline.data.coco import (annotations_by_image, decode_segmentation, load_coco,
                                 subset_images)
from pipeline.io import read_json


def truth_masks(anns: list[dict], info: dict) -> list[np.ndarray]:
    """An image's ground-truth masks from its annotations (crowd regions left out: no one
    boxes them)."""
    h, w = info["height"], info["width"]
    return [decode_segmentation(a["segmentation"], h, w).astype(bool)
            for a in anns if not a.get("iscrowd")]


class RecordingBackend(Backend):
    """The labelling assistant, keeping its latest answer: the points the annotator sees."""
    answer: dict | None = None

    def predict_task(self, task, context, with_mask=False):
        self.answer = super().predict_task(task, context, with_mask)
        return self.answer

    def last_points(self) -> list[tuple[float, float, str]]:
        out = []
        for r in (self.answer or {}).get("result", []):
            if r["type"] == "keypointlabels":
                out.append((*to_pixels(r["value"], r["original_width"], r["original_height"],
                                       ("x", "y")), r["value"]["keypointlabels"][0]))
        self.answer = None
        return out


def annotate_tasks(p, server, client, pid, truths, infos, n_points, rng, window,
                   screenshots, backend) -> list[dict]:
    """Every task of the project, in a browser: plan, carry out, submit."""
    rows = []
    browser = launch(p)
    page = browser.new_page(viewport={"width": window[0], "height": window[1]})
    login(page, server.url, server.username, server.password)
    for t in client.tasks.list(project=pid, fields="all"):
        task = t.model_dump(mode="json")
        info = infos[int(task["data"]["weakseg_image_id"])]
        w, h = info["width"], info["height"]
        result = task["predictions"][0]["result"]
        plan = plan_task(result, truths[info["id"]], w, h, n_points, rng,
                         assisted=backend is not None)
        boxes, points = regions(result, w, h)
        start = time.perf_counter()
        open_task(page, server.url, pid, t.id)
        if backend is not None:
            auto_annotation(page)
        canvas = Canvas(page, w, h)
        act = carry_out(canvas, plan, boxes, points,
                        answer=backend.last_points if backend is not None else None)
        seconds = time.perf_counter() - start
        if screenshots is not None:
            Path(screenshots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(screenshots) / f"task_{t.id}.png"))
        start = time.perf_counter()
        submit(page)
        seconds += time.perf_counter() - start
        rows.append({"image_id": info["id"], "boxes": len(boxes), "points": len(points),
                     "deleted_boxes": len(plan.delete), "flipped_points": len(plan.relabel),
                     "drawn_boxes": len(plan.draw),
                     "placed_points": sum(len(d.points) for d in plan.draw
                                          if not d.assisted),
                     "assistant_flips": sum(len(d.flips) for d in plan.draw),
                     "edits": plan.edits, "clicks": act.clicks, "keys": act.keys,
                     "drags": act.drags, "skipped": act.skipped,
                     "seconds": round(seconds, 2)})
    browser.close()
    return rows


def run(server, client, title: str, pre: dict, gt: dict, image_root: Path,
        document_root: Path, work_dir: Path, n_points: int = 10, seed: int = 0,
        window: tuple[int, int] = (1400, 1200), screenshots: Path | None = None,
        assistant: Path | None = None, placement: str = "uniform") -> dict:
    """Annotate every image of `pre` (COCO pre-annotations) in a new project `title`;
    `screenshots`: a folder for each task's page as submitted; `assistant`: a trained Mask
    R-CNN run served as the project's labelling assistant (boxes drawn for missed objects
    come back with its points, placed by `placement`, and only its wrong labels are
    flipped)."""
    from playwright.sync_api import sync_playwright

    work_dir = Path(work_dir)
    infos = {im["id"]: im for im in gt["images"]}
    by_image = annotations_by_image(subset_images(gt, infos))   # gt may hold other images
    truths = {i: truth_masks(by_image[i], info) for i, info in infos.items()}   # decoded once
    # the box labels are the pre-annotation's categories (as `make annotate` makes them);
    # scoring against the truth is class-agnostic
    names = [c["name"] for c in pre["categories"]]
    pid = tasks.get_or_create_project(client, title, names, n_points)
    tasks.import_coco(client, pid, pre, image_root, document_root, n_points=n_points, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    backend = served = None
    if assistant is not None:
        backend = RecordingBackend(assistant, document_root, points=n_points,
                                   state_dir=work_dir / "ml_backend", placement=placement)
        backend.model()   # loaded before Label Studio's /setup call, which waits 3 s at most
        served = serve(backend, "127.0.0.1", free_port())
        threading.Thread(target=served.serve_forever, daemon=True).start()
        client.ml.create(project=pid, url=f"http://127.0.0.1:{served.server_port}",
                         is_interactive=True)
    try:
        with sync_playwright() as p:
            rows = annotate_tasks(p, server, client, pid, truths, infos, n_points, rng,
                                  window, screenshots, backend)
    finally:
        if served is not None:
            served.shutdown()
    out = work_dir / "points.json"
    counts = ls_sync.sync(client, pid, work_dir, infos, pre["categories"], image_root, out,
                          n_points)
    synced = annotations_by_image(load_coco(out))
    score = {"boxes": 0, "boxes_matched": 0, "objects": 0, "points": 0, "points_right": 0}
    for row in rows:
        s = score_synced(synced[row["image_id"]], truths[row["image_id"]])
        score = {k: score[k] + s[k] for k in score}
    return {"project": pid, "tasks": rows, "sync": counts, "score": score,
            "reattached_points": reattached(work_dir / "raw", synced)}


def reattached(raw_dir: Path, synced: dict) -> int:
    """Points of boxes deleted in the UI that the sync still gave to some box: a deleted
    box's points (pixels where no surviving point lies) found among the synced points."""
    n = 0
    for f in raw_dir.glob("task_*.json"):
        task = read_json(f)
        if not task.get("annotations") or not task.get("predictions"):
            continue
        w, h = task["data"]["width"], task["data"]["height"]
        _, points = regions(task["predictions"][0]["result"], w, h)
        kept, final = regions(task["annotations"][0]["result"], w, h)
        gone = ({(int(x), int(y)) for k, (x, y, _) in points.items() if point_owner(k) not in kept}
                - {(int(x), int(y)) for x, y, _ in final.values()})
        n += sum(tuple(xy) in gone for a in synced.get(task["data"]["weakseg_image_id"], [])
                 for xy in a["point_coords"])
    return n
