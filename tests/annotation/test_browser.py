"""The real Label Studio UI in headless Chromium: an annotator's click becomes a COCO point."""
import json
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from annotation import sync as ls_sync, tasks
from annotation.client import connect
from pipeline.data.coco import decode_segmentation, load_coco

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def deepest_pixel(mask: np.ndarray) -> tuple[float, float]:
    """A point well inside the object: the maximum of the distance transform."""
    d = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(d.argmax(), d.shape)
    return x + 0.3, y + 0.6   # off the pixel centre on purpose


@contextmanager
def labeling_page(p, label_studio, pid, tid, tmp_path):
    """Log in, open a task's labeling page and yield it; on failure save a screenshot."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{label_studio.url}/user/login")
        page.fill("input[name=email]", label_studio.username)
        page.fill("input[name=password]", label_studio.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{label_studio.url}/projects/{pid}/data?task={tid}")
        page.locator("img[alt='image']").first.wait_for(state="attached", timeout=60000)
        page.locator(".konvajs-content").first.wait_for(state="visible", timeout=60000)
        yield page
        page.locator("[data-testid=bottombar-submit-button]").click()
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)
    except Exception:
        page.screenshot(path=str(tmp_path / "labeling_page.png"), full_page=True)
        print(f"screenshot of the labeling page: {tmp_path / 'labeling_page.png'}")
        raise
    finally:
        browser.close()


def test_click_in_ui_arrives_at_clicked_pixel(label_studio, tiny_sample, tmp_path, request):
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (apt-get install chromium chromium-driver; "
                    "`make test` installs it)")
    from playwright.sync_api import sync_playwright

    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    info = gt["images"][0]
    anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
    target = max(anns, key=lambda a: a["area"])
    px, py = deepest_pixel(decode_segmentation(target["segmentation"], 160, 160).astype(bool))
    one = dict(gt, images=[info], annotations=anns)
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"browser-{secrets.token_hex(3)}",
                                      [c["name"] for c in gt["categories"]])
    root = tiny_sample / "sample" / "train"
    tasks.import_coco(client, pid, one, root, tiny_sample, n_points=0)
    tid = next(iter(client.tasks.list(project=pid))).id

    with sync_playwright() as p, labeling_page(p, label_studio, pid, tid, tmp_path) as page:
        # pre-annotated boxes would take the click (it selects them): hide them first
        page.get_by_label("Hide all regions").click()
        page.locator(".lsf-label__text").filter(has_text=re.compile(r"^object$")).click()
        bb = page.locator("img[alt='image']").first.bounding_box()
        page.mouse.click(bb["x"] + px * bb["width"] / info["width"],
                         bb["y"] + py * bb["height"] / info["height"])

    images = {im["id"]: im for im in gt["images"]}
    out = tmp_path / "points.json"
    ls_sync.sync(client, pid, tmp_path, images, gt["categories"], root, out)
    pts = [(xy, lab) for a in load_coco(out)["annotations"]
           for xy, lab in zip(a["point_coords"], a["point_labels"])]
    assert len(pts) == 1, pts
    (x, y), lab = pts[0]
    # stored as the pixel index; the loader reads it at the pixel centre (+0.5)
    assert abs(x + 0.5 - px) <= 1 and abs(y + 0.5 - py) <= 1 and lab == 1


def test_preplaced_point_relabelled_without_touching_its_box(label_studio, tiny_sample,
                                                             tmp_path):
    """Points are listed above boxes: a click on a pre-placed point selects the point (not
    its box) and `x` / `o` relabels it; every box stays as it was, nothing new is drawn."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    info = gt["images"][0]
    w, h = info["width"], info["height"]
    anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
    one = dict(gt, images=[info], annotations=anns)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    n = 3
    pred = tasks.make_task(info, anns, "", n, 0, names, "v")["predictions"][0]["result"]
    pts = {r["id"]: (r["value"]["x"] * w / 100, r["value"]["y"] * h / 100,
                     r["value"]["keypointlabels"][0]) for r in pred if r["type"] == "keypointlabels"}

    def isolated(rid):  # no other point within 8 px: the click can only hit this one
        x, y, _ = pts[rid]
        return all((x - a) ** 2 + (y - b) ** 2 > 64 for k, (a, b, _) in pts.items() if k != rid)
    first = next(k for k in pts if isolated(k))
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"layout-{secrets.token_hex(3)}",
                                      sorted(names.values()), n)
    root = tiny_sample / "sample" / "train"
    tasks.import_coco(client, pid, one, root, tiny_sample, n_points=n)
    tid = next(iter(client.tasks.list(project=pid))).id

    with sync_playwright() as p, labeling_page(p, label_studio, pid, tid, tmp_path) as page:
        bb = page.locator("img[alt='image']").first.bounding_box()

        def screen(x, y):
            return bb["x"] + x * bb["width"] / w, bb["y"] + y * bb["height"] / h
        page.mouse.click(*screen(*pts[first][:2]))                 # select the point
        page.keyboard.press("x" if pts[first][2] == "object" else "o")  # relabel it
        page.keyboard.press("Escape")

    raw = ls_sync.pull(client, pid, tmp_path / "raw")
    assert raw["tasks"] == 1
    export = json.loads(next((tmp_path / "raw").glob("task_*.json")).read_text())
    result = {r["id"]: r for r in export["annotations"][0]["result"]}
    boxes_before = {r["id"]: r["value"] for r in pred if r["type"] == "rectanglelabels"}
    for rid, v in boxes_before.items():   # no box was moved, resized or deleted
        got = result[rid]["value"]
        assert all(abs(got[k] - v[k]) < 1e-6 for k in ("x", "y", "width", "height")), rid
    flipped = "background" if pts[first][2] == "object" else "object"
    assert result[first]["value"]["keypointlabels"] == [flipped]
    assert set(result) == {r["id"] for r in pred}               # no region added or lost
    assert all(result[k]["value"]["keypointlabels"] == [lab] for k, (_, _, lab) in pts.items()
               if k != first)                                    # the other points untouched


def test_deleted_box_takes_its_points_with_it(label_studio, tiny_sample, tmp_path):
    """Click inside a box away from every point (selects the box), Backspace: after sync no
    point of that box survives, none is attached to another box, and every other box keeps
    all of its points."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    n = 3
    for info in gt["images"]:   # an image with a box that has a free spot of its own
        w, h = info["width"], info["height"]
        anns = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
        names = {c["id"]: c["name"] for c in gt["categories"]}
        pred = tasks.make_task(info, anns, "", n, 0, names, "v")["predictions"][0]["result"]
        pts = [(r["value"]["x"] * w / 100, r["value"]["y"] * h / 100) for r in pred
               if r["type"] == "keypointlabels"]
        boxes = {r["id"]: (r["value"]["x"] * w / 100, r["value"]["y"] * h / 100,
                           (r["value"]["x"] + r["value"]["width"]) * w / 100,
                           (r["value"]["y"] + r["value"]["height"]) * h / 100)
                 for r in pred if r["type"] == "rectanglelabels"}

        def inside(b, x, y, m=0.0):
            return b[0] + m <= x <= b[2] - m and b[1] + m <= y <= b[3] - m
        spot = next(((k, x, y) for k, b in boxes.items() for y in np.arange(b[1], b[3], 2.0)
                     for x in np.arange(b[0], b[2], 2.0)
                     if len(boxes) > 1 and inside(b, x, y, 4)
                     and not any(inside(o, x, y, -4) for j, o in boxes.items() if j != k)
                     and all((x - a) ** 2 + (y - c) ** 2 > 100 for a, c in pts)), None)
        if spot:
            break
    assert spot, "no image of the tiny sample has a box with a free spot"
    victim, sx, sy = spot
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"delete-{secrets.token_hex(3)}",
                                      sorted(names.values()), n)
    root = tiny_sample / "sample" / "train"
    tasks.import_coco(client, pid, dict(gt, images=[info], annotations=anns), root, tiny_sample,
                      n_points=n)
    tid = next(iter(client.tasks.list(project=pid))).id

    with sync_playwright() as p, labeling_page(p, label_studio, pid, tid, tmp_path) as page:
        bb = page.locator("img[alt='image']").first.bounding_box()
        page.mouse.click(bb["x"] + sx * bb["width"] / w, bb["y"] + sy * bb["height"] / h)
        page.keyboard.press("Backspace")

    out = tmp_path / "points.json"
    res = ls_sync.sync(client, pid, tmp_path, {info["id"]: info}, gt["categories"], root, out,
                       n)
    assert res["dropped_points"] == n
    synced = load_coco(out)["annotations"]
    assert len(synced) == len(boxes) - 1
    # every remaining box has exactly its own n points: nothing of the victim moved to it
    assert all(len(a["point_labels"]) == n for a in synced)
    vb = boxes[victim]
    assert not any(abs(a["bbox"][0] - vb[0]) < 1e-3 and abs(a["bbox"][1] - vb[1]) < 1e-3
                   for a in synced)
