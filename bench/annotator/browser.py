"""Driving the real Label Studio UI in headless Chromium (Playwright, Debian's chromium):
log in, open a task, and carry out an annotator's edits with the mouse and the hotkeys,
counting clicks, keys and drags. Used by the browser tests and the simulated annotation run.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import numpy as np

from .oracle import Plan
from annotation.protocol import HOTKEYS, point_owner

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SETTLE_MS = 150
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


def login(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/user/login")
    page.fill("input[name=email]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def open_task(page, url: str, project: int, task: int) -> None:
    """The task's labeling page, with its image and canvas ready."""
    page.goto(f"{url}/projects/{project}/data?task={task}")
    page.locator("img[alt='image']").first.wait_for(state="attached", timeout=60000)
    page.locator(".konvajs-content").first.wait_for(state="visible", timeout=60000)


def auto_annotation(page) -> None:
    """Turn on Auto-Annotation and Auto-Accept (bottom bar): a box drawn with the Auto-Detect
    tool goes to the connected ML backend and its answer is accepted as it comes."""
    page.get_by_test_id("bottombar-auto-annotation-toggle").check()
    page.get_by_test_id("bottombar-auto-accept-toggle").check()


def image_box(page) -> dict:
    """Where the image's pixels are on screen: the <img> element's box. (The canvas element
    is smaller, 769 vs 811 px at 1400 px wide, and draws its content scaled: clicks mapped
    through the canvas element missed points near the image's edges; measured.)"""
    img = page.locator("img[alt='image']").first
    img.wait_for(state="visible")   # on a loaded machine the box was read before layout: None
    box = img.bounding_box()
    if box is None:
        raise RuntimeError("the task's image is not on screen in Label Studio's editor")
    return box


def submit(page) -> None:
    page.locator("[data-testid=bottombar-submit-button]").click()
    page.wait_for_load_state("networkidle")


@dataclass
class Actions:
    """What the annotator's hands did."""
    clicks: int = 0
    keys: int = 0
    drags: int = 0
    skipped: list[str] = field(default_factory=list)   # edits with no clickable spot


class Canvas:
    """The task's image on screen: image pixels -> screen positions, and the edits."""

    def __init__(self, page, width: int, height: int):
        self.page, self.w, self.h = page, width, height
        self.bb = image_box(page)
        self.act = Actions()

    def screen(self, x: float, y: float) -> tuple[float, float]:
        return (self.bb["x"] + x * self.bb["width"] / self.w,
                self.bb["y"] + y * self.bb["height"] / self.h)

    def click(self, x, y, ctrl: bool = False) -> None:
        if ctrl:
            self.page.keyboard.down("Control")
        self.page.mouse.click(*self.screen(x, y))
        if ctrl:
            self.page.keyboard.up("Control")
        self.act.clicks += 1
        # let the UI take the click (select the region) before the next key: on a loaded
        # machine a Backspace right after the click found nothing selected
        self.page.wait_for_timeout(SETTLE_MS)

    def key(self, k: str) -> None:
        self.page.keyboard.press(k)
        self.act.keys += 1

    def drag(self, a, b, steps: int = 10) -> None:
        self.page.mouse.move(*self.screen(*a))
        self.page.mouse.down()
        for k in range(1, steps + 1):
            self.page.mouse.move(*self.screen(a[0] + (b[0] - a[0]) * k / steps,
                                              a[1] + (b[1] - a[1]) * k / steps))
        self.page.mouse.up()
        self.act.drags += 1
        self.page.wait_for_timeout(SETTLE_MS)


def free_spots(box, others, points, width: int, height: int, clearance: float = 5.0,
               margin: float = 2.0, border: float = 5.0):
    """Pixels inside `box`, in no box of `others` and `clearance` px from every point (drawn
    with a 3 px radius), so a click there selects the box and nothing else; none within
    `border` px of the image's edge (clicks there select nothing: measured), far from each
    other first. Yields nothing if the box has no such spot."""
    x0, y0 = max(box[0] + margin, border), max(box[1] + margin, border)
    x1, y1 = min(box[2] - margin, width - border), min(box[3] - margin, height - border)
    ok = [(x, y) for y in np.arange(y0, y1 + 1e-6, 1.0) for x in np.arange(x0, x1 + 1e-6, 1.0)
          if not any(o[0] - margin <= x <= o[2] + margin and o[1] - margin <= y <= o[3] + margin
                     for o in others)
          and all((x - px) ** 2 + (y - py) ** 2 > clearance ** 2 for px, py in points)]
    tried = []
    while ok and len(tried) < 3:   # the spot farthest from those tried (first: the middle)
        ref = tried or [((x0 + x1) / 2, (y0 + y1) / 2)]
        far = max if tried else min
        spot = far(ok, key=lambda q: min((q[0] - a) ** 2 + (q[1] - b) ** 2 for a, b in ref))
        tried.append(spot)
        ok.remove(spot)
        yield spot


def selected(page) -> bool:
    """A region is selected: the details panel no longer shows its empty-state text."""
    return not page.get_by_text("View region details").is_visible()


def selected_ids(page) -> list[str]:
    """The ids of the editor's selected regions."""
    return page.evaluate("""() => Htx.annotationStore.selected.regionStore.regions
        .filter(r => r.selected).map(r => r.cleanId)""")


def select_in_list(canvas: Canvas, rid: str) -> bool:
    """Select region `rid` as a click on its row in the Regions list does (the editor's own
    `selectArea`, which that click calls), counted as one click: what a person does when no
    spot of the box on the image takes a click. (Finding the row by hovering did not work:
    Label Studio 1.23.2 highlights a region on hover only in linking mode.) True when
    exactly `rid` is then selected."""
    page = canvas.page
    found = page.evaluate("""(rid) => {
        const a = Htx.annotationStore.selected;
        const r = a.regionStore.regions.find(r => r.cleanId === rid);
        if (r) a.selectArea(r);
        return !!r; }""", rid)
    canvas.act.clicks += 1
    page.wait_for_timeout(SETTLE_MS)
    return found and selected_ids(page) == [rid]


def flip(canvas: Canvas, x: float, y: float, want: str, what: str) -> None:
    """Select the point at (x, y) and give it label `want`; a click that selects nothing is
    not followed by the hotkey (it would arm that label for drawing new points)."""
    canvas.click(x, y)
    if not selected(canvas.page):
        canvas.act.skipped.append(f"flip {what}: the click selected nothing")
        return
    canvas.key(HOTKEYS[want])
    canvas.key("Escape")


def carry_out(canvas: Canvas, plan: Plan, boxes: dict, points: dict, answer=None) -> Actions:
    """Do a task's edits in the UI: flip points (click, hotkey), delete boxes (click a spot
    of the box that no box above it covers and no point is near, else its row in the Regions
    list, Backspace), then draw each
    missing box (box hotkey, drag) and Ctrl+click its points with the right label active, or,
    with the assistant, draw it with the Auto-Detect tool and flip the answer's wrong points.

    `boxes`, `points`: the pre-annotation's regions by id, in list order; Label Studio
    stacks regions in list order, so a box lies above the boxes listed after it.
    `answer()`: the points [(x, y, label)] of the assistant's latest answer (assisted draws)."""
    for pid, x, y, want in plan.relabel:
        flip(canvas, x, y, want, pid)
    left = list(boxes)
    for rid in [k for k in boxes if k in plan.delete]:     # top first
        above = [boxes[k] for k in left[:left.index(rid)]]
        near = [(x, y) for k, (x, y, _) in points.items() if point_owner(k) in left]
        for spot in free_spots(boxes[rid], above, near, canvas.w, canvas.h):
            canvas.click(*spot)
            if selected(canvas.page):
                canvas.key("Backspace")
                canvas.key("Escape")
                left.remove(rid)
                break
        else:   # no spot on the image: its row in the Regions list
            if select_in_list(canvas, rid):
                canvas.key("Backspace")
                canvas.key("Escape")
                left.remove(rid)
            else:
                canvas.act.skipped.append(f"delete {rid}: neither a click on the image nor "
                                          f"its row in the Regions list selected it")
    for d in plan.draw:
        # every region hidden: a drag that starts on a visible box moves it instead of
        # drawing (the box drawn just before included), a click selects it
        canvas.page.get_by_label("Hide all regions").click()
        canvas.act.clicks += 1
        canvas.key(HOTKEYS["box"])
        if d.assisted:
            canvas.key("m")   # Label Studio's Auto-Detect tool: its boxes go to the assistant
        canvas.drag(d.box[:2], d.box[2:])
        if d.assisted:        # Auto-Accept takes the answer: the box and its labelled points
            canvas.page.wait_for_load_state("networkidle")
            canvas.page.wait_for_timeout(500)
            canvas.key("Escape")
            canvas.key("v")   # back to the selection tool: the box tool takes clicks on points
            d.resolve(answer())
            for x, y, want in d.flips:
                flip(canvas, x, y, want, "an assistant's point")
            continue
        canvas.key("Escape")
        active = None
        for x, y, lab in sorted(d.points, key=lambda p: p[2]):
            if lab != active:
                canvas.key(HOTKEYS[lab])
                active = lab
            canvas.click(x, y, ctrl=True)
        canvas.key("Escape")
    return canvas.act
