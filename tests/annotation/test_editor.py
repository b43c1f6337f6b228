"""What an annotator does in the real Label Studio 1.23.2 editor (headless Chromium at 1366 x
768), with what Label Studio cannot do shown by the editor's own state rather than assumed:
drawing a box inside a box, undo after a drag.

The editor's state is read from the page (`window.Htx`, Label Studio's editor store; the
canvas is Konva, `stage.getIntersection` is the shape a click at a screen position reaches).
A deleted box's points cannot be taken off the screen with it in one step in 1.23.2 (its
Regions list ignores Shift for a range and Ctrl+click on point rows after the box's row left
nothing selected, measured): docs/annotation.md says so, and sync drops them."""
import json
import re
from contextlib import contextmanager

import pytest

from annotation import sync as ls_sync
from bench.annotator.browser import open_task, image_box, submit
from tests.annotation.projects import logged_in_page, one_task

pytestmark = pytest.mark.e2e
W, H = 1366, 768


@contextmanager
def editor(p, label_studio, t: dict, tmp_path, settings: dict | None = None):
    """The task's labeling page at 1366 x 768 (with the gear menu's `settings`); on failure a
    screenshot is kept."""
    with logged_in_page(p, label_studio, tmp_path, W, H, settings, "editor.png") as page:
        open_task(page, label_studio.url, t["pid"], t["tid"])
        page.wait_for_timeout(1000)
        yield page


def screen(page, t):
    bb = image_box(page)
    return lambda x, y: (bb["x"] + x * bb["width"] / t["w"], bb["y"] + y * bb["height"] / t["h"])


def top_shape(page, sx: float, sy: float) -> str | None:
    """The id of the region whose shape a click at screen (sx, sy) reaches (Konva's hit test
    on the editor's canvas), None when it reaches no region."""
    name = page.evaluate("""([x, y]) => {
        const st = Htx.annotationStore.selected.names.get('image').stageRef;
        const r = st.container().getBoundingClientRect();
        const s = st.getIntersection({x: x - r.left, y: y - r.top});
        return s ? s.name() : null; }""", [sx, sy])
    return name.split("#")[0] if name else None


def regions(page) -> dict:
    """The editor's regions by id: position (percent), origin, selected."""
    return page.evaluate("""() => Object.fromEntries(
        Htx.annotationStore.selected.regionStore.regions.map(r => [r.cleanId,
            {x: r.x, y: r.y, origin: r.origin, selected: r.selected, type: r.type}])) """)


def drag(page, to_screen, a, b, steps: int = 8) -> None:
    page.mouse.move(*to_screen(*a))
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(*to_screen(a[0] + (b[0] - a[0]) * k / steps,
                                   a[1] + (b[1] - a[1]) * k / steps))
    page.mouse.up()
    page.wait_for_timeout(300)


def exported(client, pid, tmp_path) -> dict:
    """The submitted annotation's regions by id, as `make annotate-sync` pulls them."""
    raw = ls_sync.pull(client, pid, tmp_path / "raw")
    assert raw["tasks"] == 1
    export = json.loads(next((tmp_path / "raw").glob("task_*.json")).read_text())
    return {r["id"]: r for r in export["annotations"][0]["result"]}


def test_box_drawn_inside_an_existing_box_with_ctrl_held(label_studio, tiny_sample, tmp_path):
    """`b` (the box label) then a drag that starts inside an existing box moves that box;
    with Ctrl held during the drag (Label Studio: "create regions over other regions with
    Ctrl pressed") it draws a new box there, and the existing box stays where it was."""
    from playwright.sync_api import sync_playwright
    t = one_task(label_studio, tiny_sample, "ctrl-draw")
    big = max(t["boxes"], key=lambda k: (t["boxes"][k][2] - t["boxes"][k][0])
              * (t["boxes"][k][3] - t["boxes"][k][1]))
    x0, y0, x1, y1 = t["boxes"][big]
    a = (x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0))
    b = (x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0))
    with sync_playwright() as p, editor(p, label_studio, t, tmp_path) as page:
        to = screen(page, t)
        assert top_shape(page, *to(*a)) is not None   # the drag starts on a region
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.down("Control")
        drag(page, to, a, b)
        page.keyboard.up("Control")
        page.keyboard.press("Escape")
        submit(page)
        page.wait_for_timeout(1000)
    result = exported(t["client"], t["pid"], tmp_path)
    for rid, r in t["pred"].items():     # nothing pre-placed moved
        got = result[rid]["value"]
        assert all(abs(got[k] - r["value"][k]) < 1e-6 for k in ("x", "y")), rid
    new = [r for k, r in result.items() if k not in t["pred"]]
    assert len(new) == 1 and new[0]["type"] == "rectanglelabels", new
    v = new[0]["value"]
    got = (v["x"] * t["w"] / 100, v["y"] * t["h"] / 100,
           (v["x"] + v["width"]) * t["w"] / 100, (v["y"] + v["height"]) * t["h"] / 100)
    assert all(abs(g - e) < 1.5 for g, e in zip(got, (*a, *b))), (got, a, b)
    assert v["rectanglelabels"] == [sorted(t["names"].values())[0]]   # the `b` label


def test_undo_after_a_drag(label_studio, tiny_sample, tmp_path):
    """Ctrl+z after a drag: one press when the point was edited before; two after the first
    edit of a pre-placed point, because Label Studio 1.23.2 records that edit twice: the move,
    then the region's origin changing from "prediction" to "prediction-changed" (an invisible
    step; mixins/Regions.js updateOriginOnEdit, after the drag's history unfreeze)."""
    from playwright.sync_api import sync_playwright
    t = one_task(label_studio, tiny_sample, "undo")
    pts, boxes = t["pts"], t["boxes"]

    def clear(x, y, skip):
        return all((x - a) ** 2 + (y - b) ** 2 > 64 for k, (a, b, _) in pts.items() if k != skip)
    q, step = next((k, (sx, sy)) for k in pts for sx, sy in ((6, 0), (-6, 0), (0, 6), (0, -6))
                   if clear(*pts[k][:2], k) and clear(pts[k][0] + sx, pts[k][1] + sy, k)
                   and all(b[0] + 1 <= pts[k][0] + sx <= b[2] - 1 and b[1] + 1 <= pts[k][1] + sy
                           <= b[3] - 1 for b in [boxes[re.match(r"b\d+", k).group()]]))
    with sync_playwright() as p, editor(p, label_studio, t, tmp_path) as page:
        to = screen(page, t)
        start = regions(page)[q]
        x, y = pts[q][:2]
        drag(page, to, (x, y), (x + step[0], y + step[1]))
        moved = regions(page)[q]
        assert (moved["x"], moved["y"]) != (start["x"], start["y"])
        assert moved["origin"] == "prediction-changed"
        page.keyboard.press("Control+z")
        page.wait_for_timeout(300)
        once = regions(page)[q]
        # the first press undid only the origin: the point is still where it was dragged
        assert (once["x"], once["y"]) == (moved["x"], moved["y"]) and \
            once["origin"] == "prediction", once
        page.keyboard.press("Control+z")
        page.wait_for_timeout(300)
        twice = regions(page)[q]
        assert abs(twice["x"] - start["x"]) < 1e-9 and abs(twice["y"] - start["y"]) < 1e-9
        # an edit of a point already edited: one press
        page.keyboard.press("Control+Shift+z")
        page.keyboard.press("Control+Shift+z")
        page.wait_for_timeout(300)
        again = regions(page)[q]
        assert (again["x"], again["y"]) == (moved["x"], moved["y"])
        x2, y2 = x + step[0], y + step[1]
        drag(page, to, (x2, y2), (x2 - step[0] / 2, y2 - step[1] / 2))
        assert (regions(page)[q]["x"], regions(page)[q]["y"]) != (moved["x"], moved["y"])
        page.keyboard.press("Control+z")
        page.wait_for_timeout(300)
        back = regions(page)[q]
        assert (back["x"], back["y"]) == (moved["x"], moved["y"]), (back, moved)

