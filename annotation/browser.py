"""Driving the real Label Studio UI in headless Chromium (Playwright, Debian's chromium):
log in, open a task, and carry out an annotator's edits with the mouse and the hotkeys,
counting clicks, keys and drags. Used by the browser tests and the simulated annotation run.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from annotation.oracle import Plan
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


def submit(page) -> None:
    page.locator("[data-testid=bottombar-submit-button]").click()
    page.wait_for_load_state("networkidle")


@dataclass
class Actions:
    """What the annotator's hands did."""
    clicks: int = 0
    keys: int = 0
    drags: int = 0
    deleted: list[str] = field(default_factory=list)   # ids of the boxes deleted
    skipped: list[str] = field(default_factory=list)   # edits with no clickable spot


class Canvas:
    """The task's image on screen: image pixels -> screen positions, and the edits."""

    def __init__(self, page, width: int, height: int):
        self.page, self.w, self.h = page, width, height
        self.bb = page.locator("img[alt='image']").first.bounding_box()
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


def free_spot(box, others, points, clearance: float = 5.0, margin: float = 2.0):
    """A pixel inside `box`, in no other box and `clearance` px from every point (drawn with a 3 px radius): a click
    there selects the box and nothing else. None if the box has no such spot."""
    x0, y0, x1, y1 = box
    step = 1.0
    y = y0 + margin
    while y <= y1 - margin:
        x = x0 + margin
        while x <= x1 - margin:
            if (not any(o[0] - margin <= x <= o[2] + margin and o[1] - margin <= y <= o[3] + margin
                        for o in others)
                    and all((x - px) ** 2 + (y - py) ** 2 > clearance ** 2
                            for px, py in points)):
                return x, y
            x += step
        y += step
    return None


def carry_out(canvas: Canvas, plan: Plan, boxes: dict, points: dict) -> Actions:
    """Do a task's edits in the UI: flip points (click, hotkey), delete boxes (click a spot
    of the box that no box above it covers and no point is near, Backspace), then draw each
    missing box (box hotkey, drag) and Ctrl+click its points with the right label active, or,
    with the assistant, draw it with the Auto-Detect tool and flip the answer's wrong points.

    `boxes`, `points`: the pre-annotation's regions by id, in list order; Label Studio
    stacks regions in list order, so a box lies above the boxes listed after it."""
    for _, x, y, want in plan.relabel:
        canvas.click(x, y)
        canvas.key(HOTKEYS[want])
        canvas.key("Escape")
    left = list(boxes)
    for rid in [k for k in boxes if k in plan.delete]:     # top first
        above = [boxes[k] for k in left[:left.index(rid)]]
        near = [(x, y) for k, (x, y, _) in points.items() if point_owner(k) in left]
        spot = free_spot(boxes[rid], above, near)
        if spot is None:
            canvas.act.skipped.append(f"delete {rid}: no spot of the box is clear of the "
                                      f"boxes above it and of points")
            continue
        canvas.click(*spot)
        canvas.key("Backspace")
        canvas.key("Escape")
        left.remove(rid)
        canvas.act.deleted.append(rid)
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
            for x, y, want in d.flips:
                canvas.click(x, y)
                canvas.key(HOTKEYS[want])
                canvas.key("Escape")
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
