"""The annotation protocol in Label Studio terms: labeling config and result <-> COCO points.

An annotator sees a box and N points per object and marks each point `object` or
`background` (PointSup's protocol, Cheng et al., CVPR 2022, Sec. 4); they may move, add or
delete points and boxes. Label Studio stores positions in percent of the image size.
"""
from __future__ import annotations

import re
from xml.sax.saxutils import quoteattr

# ids of points placed for a box: b<box>p<point> (pre-annotation), b<box>_p<point> (the
# assistant's pre-annotation) or <drawn box id>_a_p<point> (the assistant's points for a box
# the annotator drew, re-issued as <drawn box id>_a). Only these shapes: Label Studio's own
# ids (10 random characters of [A-Za-z0-9_-]) may end in _p<digits> by chance, and a
# hand-drawn point read as a deleted box's point would be dropped
ASSISTED = "_a"          # suffix of a drawn box re-issued by the assistant
_PRE = re.compile(r"^(b\d+)_?p\d+$|^(.+" + ASSISTED + r")_p\d+$")

BOX, POINT, IMAGE, MASK = "box", "point", "image", "mask"
MODEL_MASK = "model mask"  # the brush label of the model's (read-only) mask overlay
OBJECT, BACKGROUND = "object", "background"


# Okabe-Ito blue / orange: told apart with every common colour-vision deficiency, and
# neither vanishes on green or red objects (the old green / red did both)
OBJECT_COLOUR, BACKGROUND_COLOUR = "#0072B2", "#E69F00"
# The editor on a laptop screen, 1366 x 768, Label Studio 1.23.2 (measured, a task opened from
# the data list, the tighter of its two views): the image starts 308 px down (menus,
# instructions, labels) and the bottom bar at ~715 px. Label Studio's default image height,
# calc(100vh - 194px), hid 29% of a square image under that bar; 100vh - 380px is 388 px there
IMAGE_MAX_HEIGHT = "calc(100vh - 380px)"
EDITOR_PX = (700, 388)    # the most an image is drawn at there: width (assumed), height
# One point size: a point drawn by hand is `strokeWidth` screen pixels wide (Label Studio sizes
# it by the control's strokeWidth at the current zoom), so a pre-placed one is made that wide
# at the reference screen; at 3 image pixels they were 1.875% against 0.52% of the image width
POINT_SCREEN_PX = 6


def point_width(width: float, height: float) -> float:
    """A pre-placed point's width in percent of the image width: POINT_SCREEN_PX on the
    reference screen, the size of a point drawn by hand there."""
    shown = min(EDITOR_PX[1] * width / height, EDITOR_PX[0])
    return 100 * POINT_SCREEN_PX / shown
HOTKEYS = {"box": "b", OBJECT: "o", BACKGROUND: "x"}


def labeling_config(category_names: list[str] = ("object",),
                    mask_overlay: bool = False) -> str:
    """Labels above the image (in view on a laptop screen), mnemonic hotkeys, the point labels
    first: Label Studio stacks regions in list order, so points stay clickable above boxes.

    mask_overlay adds a brush control so the assistant's masks can be shown; off by default:
    in Label Studio 1.23.2 a brush control takes the canvas's clicks (measured in the browser
    test: a click on a point no longer selects it), which costs more than the overlay gives."""
    names = list(category_names)
    brush = BRUSH if mask_overlay else ""
    labels = "\n".join(
        f"    <Label value={quoteattr(n)}" + (f' hotkey="{HOTKEYS["box"]}"' if i == 0 else "")
        + "/>" for i, n in enumerate(names))
    return f"""<View>
  <Header value="Each object: one box and its points. Select a point, then o = object, x = background; Ctrl+click inside a box adds a point; Backspace deletes the selected region."/>
  <KeyPointLabels name="{POINT}" toName="{IMAGE}" smart="false" strokeWidth="{POINT_SCREEN_PX}" opacity="1">
    <Label value="{OBJECT}" hotkey="{HOTKEYS[OBJECT]}" background="{OBJECT_COLOUR}"/>
    <Label value="{BACKGROUND}" hotkey="{HOTKEYS[BACKGROUND]}" background="{BACKGROUND_COLOUR}"/>
  </KeyPointLabels>
  <RectangleLabels name="{BOX}" toName="{IMAGE}" smart="true">
{labels}
  </RectangleLabels>
{brush}  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" maxHeight="{IMAGE_MAX_HEIGHT}"/>
</View>"""


BRUSH = f"""  <BrushLabels name="{MASK}" toName="{IMAGE}" opacity="0.35">
    <Label value="{MODEL_MASK}" background="#56B4E9"/>
  </BrushLabels>
"""


def instructions(points_per_box: int) -> str:
    """The project's instructions (shown before the first task and under the info button)."""
    return f"""<h3>Points per object (PointSup)</h3>
<ul>
<li>Each object gets one <b>box</b> (hotkey <b>b</b>) and {points_per_box} <b>points</b>
inside it. Pre-placed boxes and points come from the model: fix them, do not redraw them.</li>
<li>Select a point, then press <b>o</b> if it lies on the box's object, <b>x</b> if on
background (anything else, including another object). Drag a point to move it.</li>
<li>To add a point inside a box, press its label (<b>o</b> / <b>x</b>), then hold <b>Ctrl</b>
while clicking (a plain click selects the box). To add several with one label, turn on
<i>Keep label selected after creating a region</i> in the settings (gear icon) once. A point
you added lies under its box, so a click on it selects the box: select it by its row in the
<b>Regions</b> list instead (By Time: the newest is the last row). A point belongs to the box it was pre-placed for, or else to the
smallest box around it; a point in no box is ignored.</li>
<li>A wrong box: select it and press <b>Backspace</b>; its points stay on screen but are
dropped with it, never given to another box.</li>
<li>A missed object: press <b>b</b> and drag its box; over an existing box hold <b>Ctrl</b>
while dragging (a drag without Ctrl moves that box). Then add {points_per_box} points (fewer
are kept, and flagged for review).</li>
<li><b>Ctrl+z</b> undoes; after the first change to a pre-placed point or box press it twice
(Label Studio also records that the region was changed).</li>
</ul>"""


def point_owner(rid: str) -> str | None:
    """The id of the box a point was placed for, from the point's id (None: added by hand)."""
    m = _PRE.match(rid)
    return (m.group(1) or m.group(2)) if m else None


def to_pixels(value: dict, width: float, height: float, keys=("x", "y", "width", "height")):
    """A Label Studio region value (percent of the image) -> the same keys in pixels (a point:
    keys=("x", "y")). KeyError/TypeError/ValueError when one is missing or not a number."""
    return tuple(float(value[k]) * (width if k in ("x", "width") else height) / 100
                 for k in keys)


def box_result(bbox, width, height, label: str, rid: str) -> dict:
    x, y, w, h = bbox
    return {"id": rid, "type": "rectanglelabels", "from_name": BOX, "to_name": IMAGE,
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                      "height": 100 * h / height, "rotation": 0, "rectanglelabels": [label]}}


def point_result(x, y, width, height, is_object: bool, rid: str,
                 parent: str | None = None) -> dict:
    """A keypoint at pixel (x, y) (continuous image coordinates). `parent`: the id of the box
    it was placed for; Label Studio's Regions list then shows the point under that box, so
    the box and its points can be selected (and deleted) together there."""
    r = {"id": rid, "type": "keypointlabels", "from_name": POINT, "to_name": IMAGE,
         "original_width": width, "original_height": height, "image_rotation": 0,
         "value": {"x": 100 * x / width, "y": 100 * y / height,
                   "width": point_width(width, height),
                   "keypointlabels": [OBJECT if is_object else BACKGROUND]}}
    if parent:
        r["parentID"] = parent
    return r


def results_to_instances(results: list[dict], width: int, height: int,
                         category_ids: dict[str, int], points_per_box: int = 0
                         ) -> tuple[list[dict], list[str]]:
    """One annotation's result list -> COCO instances with points, and warnings.

    Each box is an instance. A pre-placed point keeps its box (region ids `b<k>p<j>` belong to
    box `b<k>`); any other point goes to the smallest box that contains it (points in no box,
    or outside the image, are dropped with a warning). Coordinates come back in
    pixels as PointSup stores them: integer pixel indices [x, y]. A box left with fewer
    than `points_per_box` labelled points keeps what it has and is flagged
    (`"fewer_points": true`) for review; a point of a deleted box is dropped and counted
    (warning "belonged to deleted box").
    """
    boxes, points, warnings = [], [], []
    present = {str(r.get("id")) for r in results if r.get("type") == "rectanglelabels"}
    for r in results:
        v = r.get("value") or {}
        try:
            w = float(r.get("original_width") or width)
            h = float(r.get("original_height") or height)
            if r.get("type") == "rectanglelabels":
                x0, y0, bw, bh = to_pixels(v, w, h)
            elif r.get("type") == "keypointlabels":
                px, py = to_pixels(v, w, h, ("x", "y"))
        except (KeyError, TypeError, ValueError):
            warnings.append(f"region {r.get('id')!r} has missing or non-numeric coordinates; "
                            f"skipped")
            continue
        if r.get("type") == "rectanglelabels":
            label = (v.get("rectanglelabels") or ["object"])[0]
            if label not in category_ids:
                warnings.append(f"box with unknown label {label!r} skipped")
                continue
            if not (bw > 0 and bh > 0):
                warnings.append(f"box {r.get('id')!r} has size {bw:.1f}x{bh:.1f}; skipped")
                continue
            # clip to the image; a box wholly outside it is no instance
            x1, y1 = min(x0 + bw, w), min(y0 + bh, h)
            x0, y0 = max(x0, 0.0), max(y0, 0.0)
            if x1 <= x0 or y1 <= y0:
                warnings.append(f"box {r.get('id')!r} lies outside the {w:.0f}x{h:.0f} image; "
                                f"skipped")
                continue
            boxes.append({"bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": category_ids[label],
                          "point_coords": [], "point_labels": [], "_rid": r.get("id")})
        elif r.get("type") == "keypointlabels":
            if not (0 <= px < w and 0 <= py < h):
                warnings.append(f"point ({px:.1f}, {py:.1f}) outside the {w}x{h} image skipped")
                continue
            lab = (v.get("keypointlabels") or [OBJECT])[0]
            owner = point_owner(str(r.get("id", "")))
            if owner is not None and owner not in present:
                # its box was deleted: the point described that box's object, and may lie on
                # another box's background; never re-attach it
                warnings.append(f"point {r.get('id')!r} belonged to deleted box {owner!r}; "
                                f"dropped")
                continue
            points.append((px, py, 1 if lab == OBJECT else 0, owner))
    for px, py, lab, owner in points:
        holders = [b for b in boxes if b["_rid"] == owner] or \
            [b for b in boxes if b["bbox"][0] <= px <= b["bbox"][0] + b["bbox"][2]
             and b["bbox"][1] <= py <= b["bbox"][1] + b["bbox"][3]]
        if not holders:
            warnings.append(f"point ({px:.1f}, {py:.1f}) lies in no box; skipped")
            continue
        b = min(holders, key=lambda b: b["bbox"][2] * b["bbox"][3])
        b["point_coords"].append([min(int(px), width - 1), min(int(py), height - 1)])
        b["point_labels"].append(lab)
    for b in boxes:
        b.pop("_rid")
        b["area"] = b["bbox"][2] * b["bbox"][3]
        b["iscrowd"] = 0
        if len(b["point_labels"]) < points_per_box:
            b["fewer_points"] = True
    return boxes, warnings
