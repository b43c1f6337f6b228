"""The real Label Studio UI in headless Chromium: an annotator's click becomes a COCO point."""
import json
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from annotation import sync as ls_sync, tasks
from bench.annotator.browser import CHROMIUM, open_task, image_box, submit
from tests.annotation.projects import N, import_task, logged_in_page, one_task, preplaced
from annotation.client import connect
from pipeline.data.coco import decode_segmentation, load_coco
from tests.annotation.test_editor import regions, top_shape

pytestmark = pytest.mark.e2e


def deepest_pixel(mask: np.ndarray) -> tuple[float, float]:
    """A point well inside the object: the maximum of the distance transform."""
    d = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(d.argmax(), d.shape)
    return x + 0.3, y + 0.6   # off the pixel centre on purpose


@contextmanager
def labeling_page(p, label_studio, pid, tid, tmp_path, height: int = 900):
    """Log in, open a task's labeling page and yield it, then submit; on failure save a
    screenshot."""
    with logged_in_page(p, label_studio, tmp_path, 1400, height, shot="labeling_page.png",
                        full_page=True) as page:
        open_task(page, label_studio.url, pid, tid)
        yield page
        submit(page)
        page.wait_for_timeout(1000)


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
        bb = image_box(page)
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


def test_preplaced_points_relabelled_dragged_deleted_and_added_without_touching_boxes(
        label_studio, tiny_sample, tmp_path):
    """Points are listed above boxes, so an annotator works on a pre-placed point directly:
    a click selects it (not its box) and `x` / `o` relabels it; a drag moves it; Backspace
    deletes it; with a point label active, Ctrl+click inside a box adds a point. Every box
    stays exactly where it was, and sync gives each edited point to its own box."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    t = one_task(label_studio, tiny_sample, "layout")
    gt, info, n, w, h, pts, boxes = t["gt"], t["info"], N, t["w"], t["h"], t["pts"], t["boxes"]
    client, pid, tid, root = t["client"], t["pid"], t["tid"], t["root"]

    def clear(x, y, r=10.0, skip=()):  # no point within r px: a click there hits nothing else
        return all((x - a) ** 2 + (y - b) ** 2 > r * r for k, (a, b, _) in pts.items()
                   if k not in skip)

    def box_of(rid):
        return next(k for k in boxes if rid.startswith(k + "p"))

    def inside(b, x, y, m=0.0):
        return b[0] + m <= x <= b[2] - m and b[1] + m <= y <= b[3] - m
    free = [k for k in pts if clear(*pts[k][:2], skip=(k,))]
    assert len(free) >= 3, "the tiny sample's first image has too few isolated points"
    # the drag: a point and a 6 px step that stays inside its own box, clear of other points
    drag, step = next(((k, (sx, sy)) for k in free for sx, sy in
                       ((6, 0), (-6, 0), (0, 6), (0, -6))
                       if inside(boxes[box_of(k)], pts[k][0] + sx, pts[k][1] + sy, 1)
                       and clear(pts[k][0] + sx, pts[k][1] + sy, 8, skip=(k,))), (None, None))
    assert drag, "no point can be dragged 6 px inside its box"
    relabel, delete = [k for k in free if k != drag][:2]
    dx, dy = pts[drag][0] + step[0], pts[drag][1] + step[1]
    owner = box_of(relabel)   # the new point goes into the relabelled point's box
    add = next(((x, y) for y in np.arange(boxes[owner][1], boxes[owner][3], 2.0)
                for x in np.arange(boxes[owner][0], boxes[owner][2], 2.0)
                if inside(boxes[owner], x, y, 3) and clear(x, y, 10)
                and not any(inside(b, x, y, -3) for k, b in boxes.items() if k != owner)
                and (x - dx) ** 2 + (y - dy) ** 2 > 100), None)
    assert add, "no free spot in the box"

    # a tall window: the whole image in view, so every point can be clicked without scrolling
    with sync_playwright() as p, \
            labeling_page(p, label_studio, pid, tid, tmp_path, height=1200) as page:
        bb = image_box(page)
        assert bb["y"] + bb["height"] <= 1200, "the image does not fit in the window"

        def screen(x, y):
            return bb["x"] + x * bb["width"] / w, bb["y"] + y * bb["height"] / h
        page.mouse.click(*screen(*pts[relabel][:2]))                 # select the point
        page.keyboard.press("x" if pts[relabel][2] == "object" else "o")  # relabel it
        page.keyboard.press("Escape")
        page.mouse.move(*screen(*pts[drag][:2]))                     # drag a point
        page.mouse.down()
        for k in range(1, 7):
            page.mouse.move(*screen(pts[drag][0] + step[0] * k / 6, pts[drag][1] + step[1] * k / 6))
        page.mouse.up()
        page.keyboard.press("Escape")
        page.mouse.click(*screen(*pts[delete][:2]))                  # delete a point
        page.keyboard.press("Backspace")
        page.keyboard.press("Escape")
        page.keyboard.press("o")                                     # add an object point
        page.keyboard.down("Control")
        page.mouse.click(*screen(*add))
        page.keyboard.up("Control")
        page.keyboard.press("Escape")

    raw = ls_sync.pull(client, pid, tmp_path / "raw")
    assert raw["tasks"] == 1
    export = json.loads(next((tmp_path / "raw").glob("task_*.json")).read_text())
    result = {r["id"]: r for r in export["annotations"][0]["result"]}
    for rid, v in {k: r["value"] for k, r in t["pred"].items()
                   if r["type"] == "rectanglelabels"}.items():
        got = result[rid]["value"]    # no box was moved, resized or deleted
        assert all(abs(got[k] - v[k]) < 1e-6 for k in ("x", "y", "width", "height")), rid
    flipped = "background" if pts[relabel][2] == "object" else "object"
    assert result[relabel]["value"]["keypointlabels"] == [flipped]
    moved = result[drag]["value"]
    assert abs(moved["x"] * w / 100 - dx) < 1.5 and abs(moved["y"] * h / 100 - dy) < 1.5
    assert delete not in result
    new = [r for k, r in result.items() if k not in pts and r["type"] == "keypointlabels"]
    assert len(new) == 1 and new[0]["value"]["keypointlabels"] == ["object"]
    assert abs(new[0]["value"]["x"] * w / 100 - add[0]) < 1.5
    assert all(result[k]["value"]["keypointlabels"] == [lab] for k, (_, _, lab) in pts.items()
               if k not in (relabel, delete))                    # the other labels untouched
    # sync: the edited points stay with their boxes, the new one joins the box it lies in
    out = tmp_path / "points.json"
    ls_sync.sync(client, pid, tmp_path, {info["id"]: info}, gt["categories"], root, out, n)
    synced = load_coco(out)["annotations"]
    counts = sorted(len(a["point_labels"]) for a in synced)
    expect = sorted(n - (k == box_of(delete)) + (k == owner) for k in boxes)
    assert counts == expect


def test_deleted_box_takes_its_points_with_it(label_studio, tiny_sample, tmp_path):
    """Click inside a box away from every point (selects the box), Backspace: after sync no
    point of that box survives, none is attached to another box, and every other box keeps
    all of its points."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    n = N
    for index in range(8):   # an image with a box that has a free spot of its own
        t = preplaced(tiny_sample, index)
        w, h, boxes = t["w"], t["h"], t["boxes"]
        pts = [(x, y) for x, y, _ in t["pts"].values()]

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
    t = import_task(label_studio, tiny_sample, "delete", t)
    gt, info, root, client, pid, tid = (t[k] for k in ("gt", "info", "root", "client", "pid",
                                                        "tid"))

    with sync_playwright() as p, labeling_page(p, label_studio, pid, tid, tmp_path) as page:
        bb = image_box(page)
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


def in_view(page, height: int) -> dict:
    """Where the image and the first label are, and the top of the bottom bar (its Submit
    button's top edge; the window's bottom when there is none)."""
    img = page.locator("img[alt='image']").first.bounding_box()
    label = page.locator(".lsf-label").first.bounding_box()
    button = page.get_by_test_id("bottombar-submit-button")
    bar = button.first.bounding_box()["y"] if button.count() else height
    return {"image": img, "label": label, "bar": bar}


def test_laptop_screen_whole_image_one_point_size_label_kept_new_point_selectable(
        label_studio, tiny_sample, tmp_path):
    """At 1366 x 768, in "Label All Tasks" and in a task opened from the data list: the whole
    image lies above the bottom bar, its labels in view. With "Keep label selected after
    creating a region" on (docs/annotators.md): `o` and three Ctrl+clicks in a box add three
    object points, each as wide as the pre-placed ones. A click on the image cannot select
    such a point: Label Studio 1.23.2 draws a region made later under the earlier ones, so the
    box it lies in takes the click (Konva's hit test at each new point reaches the box). It is
    selected by a click on its row in the Regions list (By Time: the newest is the last row);
    `x` then relabels it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    t = one_task(label_studio, tiny_sample, "laptop")
    n, pid, tid, boxes, w, h = N, t["pid"], t["tid"], t["boxes"], t["w"], t["h"]
    pts = {k: (x, y) for k, (x, y, _) in t["pts"].items()}
    client = t["client"]

    def inside(b, x, y, m=0.0):
        return b[0] + m <= x <= b[2] - m and b[1] + m <= y <= b[3] - m
    spots = []   # three spots in one box, in no other box, 10 px from every point and spot
    for k, b in sorted(boxes.items(), key=lambda kb: -(kb[1][2] - kb[1][0]) * (kb[1][3] - kb[1][1])):
        spots = []
        for y in np.arange(b[1], b[3], 2.0):
            for x in np.arange(b[0], b[2], 2.0):
                if inside(b, x, y, 3) and not any(inside(o, x, y, -3) for j, o in boxes.items()
                                                  if j != k) \
                        and all((x - a) ** 2 + (y - c) ** 2 > 100
                                for a, c in [*pts.values(), *spots]) and len(spots) < 3:
                    spots.append((x, y))
        if len(spots) == 3:
            break
    assert len(spots) == 3, "no box of the tiny sample's first image has room for 3 points"

    W, H = 1366, 768
    # the setting an annotator turns on in the gear menu: keep the label after a region
    with sync_playwright() as p, logged_in_page(p, label_studio, tmp_path, W, H,
                                                {"continuousLabeling": True},
                                                "laptop.png") as page:
        page.goto(f"{label_studio.url}/projects/{pid}/data?labeling=1")   # Label All Tasks
        page.locator("img[alt='image']").first.wait_for(state="visible", timeout=60000)
        page.wait_for_timeout(1000)
        views = {"label all tasks": in_view(page, H)}
        open_task(page, label_studio.url, pid, tid)                        # from the list
        page.wait_for_timeout(1000)
        views["data list"] = in_view(page, H)
        for view, v in views.items():
            img, label = v["image"], v["label"]
            assert img["y"] >= 0 and img["y"] + img["height"] <= v["bar"] + 1, (view, v)
            assert img["x"] >= 0 and img["x"] + img["width"] <= W, (view, v)
            assert 0 <= label["y"] and label["y"] + label["height"] <= H, (view, v)
        bb = image_box(page)

        def screen(x, y):
            return bb["x"] + x * bb["width"] / w, bb["y"] + y * bb["height"] / h
        page.keyboard.press("o")                      # the label, once
        for s in spots:
            page.keyboard.down("Control")
            page.mouse.click(*screen(*s))
            page.keyboard.up("Control")
            page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        for s in spots:       # why a click on the image cannot select a hand-added point
            assert top_shape(page, *screen(*s)) in boxes, s
        k = next(iter(pts))   # while a pre-placed point is above its box
        assert top_shape(page, *screen(*pts[k])) == k
        page.locator(".lsf-tree-list").first.hover()  # Regions list: scroll to its end
        page.mouse.wheel(0, 5000)
        page.wait_for_timeout(500)
        page.locator(".lsf-outliner-item").last.click()    # the newest point's row
        page.wait_for_timeout(300)
        chosen = [k for k, r in regions(page).items() if r["selected"]]
        assert len(chosen) == 1 and chosen[0] not in pts, chosen
        page.keyboard.press("x")
        page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        submit(page)
        page.wait_for_timeout(1000)
    raw = ls_sync.pull(client, pid, tmp_path / "raw")
    assert raw["tasks"] == 1
    export = json.loads(next((tmp_path / "raw").glob("task_*.json")).read_text())
    result = export["annotations"][0]["result"]
    new = [r for r in result if r["type"] == "keypointlabels" and r["id"] not in pts]
    old = [r for r in result if r["type"] == "keypointlabels" and r["id"] in pts]
    print({"origins": sorted({str(r.get("origin")) for r in new}), "views": views,
           "new": [r["value"] for r in new], "old width": old[0]["value"]["width"]})
    assert len(new) == 3, [r["value"] for r in new]           # the label stayed chosen
    widths = {round(r["value"]["width"], 3) for r in old}
    assert len(widths) == 1
    for r in new:                                             # one point size
        assert abs(r["value"]["width"] / old[0]["value"]["width"] - 1) < 0.2, \
            (r["value"]["width"], old[0]["value"]["width"])
    last = min(new, key=lambda r: (r["value"]["x"] * w / 100 - spots[-1][0]) ** 2
               + (r["value"]["y"] * h / 100 - spots[-1][1]) ** 2)
    assert last["id"] == chosen[0]
    assert last["value"]["keypointlabels"] == ["background"]   # selected and relabelled
    assert all(r["value"]["keypointlabels"] == ["object"] for r in new if r is not last)
    assert all(r.get("origin") == "manual" for r in new)     # what Label Studio records
