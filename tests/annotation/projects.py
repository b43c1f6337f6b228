"""A Label Studio project for the browser tests: one task (the tiny sample's first image)
with its ground truth pre-annotated as boxes and N points each."""
import json
import secrets
from contextlib import contextmanager
from pathlib import Path

import pytest

from annotation import tasks
from annotation.client import connect
from bench.annotator.browser import CHROMIUM
from pipeline.data.coco import load_coco

N = 3   # points per box


def preplaced(tiny_sample, index: int = 0) -> dict:
    """The tiny sample's image `index` with its ground truth as the pre-annotation of a task:
    w, h, the regions (`pred`), points {id: (x, y, label)} and boxes {id: (x0, y0, x1, y1)} in
    image pixels."""
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    info = gt["images"][index]
    w, h = info["width"], info["height"]
    anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
    names = {c["id"]: c["name"] for c in gt["categories"]}
    pred = tasks.make_task(info, anns, "", N, 0, names, "v")["predictions"][0]["result"]
    return dict(
        gt=gt, info=info, anns=anns, w=w, h=h, names=names, pred={r["id"]: r for r in pred},
        root=tiny_sample / "sample" / "train",
        pts={r["id"]: (r["value"]["x"] * w / 100, r["value"]["y"] * h / 100,
                       r["value"]["keypointlabels"][0]) for r in pred
             if r["type"] == "keypointlabels"},
        boxes={r["id"]: (r["value"]["x"] * w / 100, r["value"]["y"] * h / 100,
                         (r["value"]["x"] + r["value"]["width"]) * w / 100,
                         (r["value"]["y"] + r["value"]["height"]) * h / 100)
               for r in pred if r["type"] == "rectanglelabels"})


def import_task(label_studio, tiny_sample, prefix: str, t: dict) -> dict:
    """A new project holding the one task `t` (from `preplaced`); adds client, pid, tid."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"{prefix}-{secrets.token_hex(3)}",
                                      sorted(t["names"].values()), N)
    tasks.import_coco(client, pid, dict(t["gt"], images=[t["info"]], annotations=t["anns"]),
                      t["root"], tiny_sample, n_points=N)
    return dict(t, client=client, pid=pid, tid=next(iter(client.tasks.list(project=pid))).id)


def one_task(label_studio, tiny_sample, prefix: str) -> dict:
    """A project with the tiny sample's first image, its ground truth as pre-annotation."""
    return import_task(label_studio, tiny_sample, prefix, preplaced(tiny_sample))


@contextmanager
def logged_in_page(p, label_studio, tmp_path, width: int, height: int,
                   settings: dict | None = None, shot: str = "page.png", full_page: bool = False):
    """A browser page of width x height logged in to the server (with the gear menu's
    `settings` stored where Label Studio keeps them); on failure a screenshot is kept in
    tmp_path and its path printed."""
    from bench.annotator.browser import launch, login
    browser = launch(p)
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        login(page, label_studio.url, label_studio.username, label_studio.password)
        if settings:
            page.evaluate(f"localStorage.setItem('labelStudio:settings', "
                          f"JSON.stringify({json.dumps(settings)}))")
        yield page
    except Exception:
        page.screenshot(path=str(tmp_path / shot), full_page=full_page)
        print(f"screenshot: {tmp_path / shot}")
        raise
    finally:
        browser.close()
