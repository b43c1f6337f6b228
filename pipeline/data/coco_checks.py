"""Check a COCO file when it is loaded, so a broken annotation is one line naming the file, the
annotation and the fix, never a pycocotools traceback (or a hang) after all the prediction work.

What is checked: the shape of the file (images a list of objects with id and file_name,
annotations a list of objects), ids (image and annotation ids unique, known image and
category), and each mask: a polygon has an even number of finite coordinates (NaN made
pycocotools allocate until the kernel killed it, Infinity crashed it), at least 3 points; an
RLE has the image's size and run lengths that are non-negative and cover exactly height x
width pixels. `bbox` is 4 finite numbers with width and height >= 0, `area` a finite number
>= 0, points finite; a missing `bbox` or `area` (COCOeval needs both) is filled from the mask,
a missing annotation id is given one.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.errors import UserError


_NUMBER = (int, float)  # JSON numbers; exact types: this runs over every COCO coordinate


def rle_counts(counts: str) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (pycocotools' LEB128-like code: 5 bits per
    character from '0', 0x20 = more characters follow, 0x10 in the last one = negative, and
    from the third run on each value is a difference to the run two before)."""
    c = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if (c < 0).any() or (c > 63).any():
        raise ValueError("characters outside the RLE alphabet")
    if c[-1] & 0x20:
        raise ValueError("the string ends inside a number")
    last = (c & 0x20) == 0                               # the last character of each value
    group = np.concatenate([[0], np.cumsum(last)[:-1]])  # value index of each character
    start = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    pos = np.arange(c.size) - start[group]               # character index within its value
    if pos.max() > 11:
        raise ValueError("a run length is too long to be real")
    vals = np.bincount(group, (c & 0x1F) << (5 * pos)).astype(np.int64)
    neg = (c[last] & 0x10) != 0
    vals[neg] |= -1 << (5 * (pos[last][neg] + 1))        # sign-extend
    for parity in (0, 1):                                # x[m] += x[m-2] for m > 2
        first = 2 if parity == 0 else 1
        if vals.size > first:
            vals[first::2] = np.cumsum(vals[first::2])
    return vals


def rle_sums(counts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`rle_counts` for many strings at once: (sum of runs, decodes to non-negative runs) per
    string. One vectorised pass over all characters (per-string decoding costs ~60 us: minutes
    on COCO-size files); per-string results come from reductions over each string's slice."""
    n = len(counts)
    lens = np.fromiter(map(len, counts), np.int64, n)
    sums, ok = np.zeros(n, np.int64), np.ones(n, bool)
    full = lens > 0                     # an empty string: no runs, sum 0
    if not full.any():
        return sums, ok
    c = np.frombuffer("".join(counts).encode("ascii"), np.uint8).astype(np.int16) - 48
    begin = np.cumsum(lens)[full] - lens[full]          # each non-empty string's first char
    ends = begin + lens[full] - 1
    bad = (c < 0) | (c > 63)
    c = c.clip(0, 63)
    last = (c & 0x20) == 0                              # the last character of each value
    ok[full] &= np.add.reduceat(bad, begin) == 0
    ok[full] &= last[ends]                              # a string may not end inside a number
    last[ends] = True                                   # a value never spans two strings
    start = np.concatenate([[True], last[:-1]])
    idx = np.arange(c.size)
    pos = idx - np.maximum.accumulate(np.where(start, idx, 0))  # character index in its value
    ok[full] &= np.add.reduceat(pos > 11, begin) == 0
    pos = pos.clip(0, 11)
    vals = np.add.reduceat((c & 0x1F).astype(np.int64) << (5 * pos), np.flatnonzero(start))
    neg = (c[last] & 0x10) != 0
    vals[neg] |= -1 << (5 * (pos[last][neg] + 1))      # sign-extend
    # from the third run on each value is a difference to the run two before: a cumulative
    # sum per string and parity, without a sort (global sums minus the string's offset)
    nvals = np.zeros(n, np.int64)
    nvals[full] = np.add.reduceat(last, begin)
    first = np.cumsum(nvals) - nvals                    # each string's first value
    owner = np.repeat(np.arange(n), nvals)
    vi = np.arange(vals.size) - first[owner]
    for parity, lo in ((1, 1), (0, 2)):
        sel = (vi % 2 == parity) & (vi >= lo)
        cs = np.cumsum(np.where(sel, vals, 0))
        before = np.concatenate([[0], cs])[first]       # the sum before each string
        vals = np.where(sel, cs - before[owner], vals)
    sums[full] = np.add.reduceat(vals, first[full])
    ok[full] &= np.add.reduceat(vals < 0, first[full]) == 0
    return sums, ok


def _mask_problem(seg, h, w, runs_checked: bool = False) -> str | None:
    if isinstance(seg, list):
        if not seg:
            return "has an empty polygon list"
        for poly in seg:
            if not isinstance(poly, list) or not all(type(v) in _NUMBER for v in poly):
                return "has a polygon that is not a list of numbers"
            if not all(map(math.isfinite, poly)):
                return "has a polygon with a coordinate that is not a finite number (NaN or Infinity)"
            if len(poly) % 2:
                return f"has a polygon with an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"has a polygon with fewer than 3 points ({len(poly) // 2})"
        return None
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return "has a segmentation that is neither a polygon list nor an RLE {size, counts}"
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return f"has an RLE size {size!r} that is not [height, width]"
    if h is not None and list(size) != [h, w]:
        return f"has an RLE of size {size[0]}x{size[1]} on an image of {h}x{w}"
    counts = seg["counts"]
    if runs_checked and isinstance(counts, str):
        return None
    try:
        runs = rle_counts(counts) if isinstance(counts, str) else np.asarray(counts, np.int64)
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        return f"has RLE counts that do not decode ({e})"
    if runs.ndim != 1 or (runs < 0).any():
        return "has negative RLE run lengths"
    if int(runs.sum()) != size[0] * size[1]:
        return (f"has RLE runs covering {int(runs.sum())} pixels, not the "
                f"{size[0]}x{size[1]}={size[0] * size[1]} of its size")
    return None


def validate(data, path, what: str) -> dict:
    """Return `data` (with defaults filled in) or raise one UserError naming the problem."""
    def fail(msg):
        raise UserError(f"{what} {path}: {msg}")

    if not isinstance(data, dict) or "images" not in data:
        fail("has no 'images' list; is it a COCO instances file?")
    if not isinstance(data["images"], list):
        fail(f"'images' is a {type(data['images']).__name__}, not a list of image records")
    data.setdefault("annotations", [])
    data.setdefault("categories", [{"id": 1, "name": "object", "supercategory": "object"}])
    for key in ("annotations", "categories"):
        if not isinstance(data[key], list):
            fail(f"'{key}' is a {type(data[key]).__name__}, not a list")
    sizes = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            fail(f"image #{i} has no integer 'id'; each image needs id and file_name")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            fail(f"image {im['id']} has no 'file_name'; add the image's path under the split's "
                 f"image folder")
        if im["id"] in sizes:
            fail(f"image id {im['id']} appears twice; image ids must be unique")
        h, w = im.get("height"), im.get("width")
        sizes[im["id"]] = (h, w) if isinstance(h, int) and isinstance(w, int) else (None, None)
    cats = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    deferred, ann_ids, unnamed, unboxed = [], set(), [], []
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            fail(f"annotation #{i} is {a!r}, not an object; remove it")
        name = _name(a, i)
        if a.get("image_id") not in sizes:
            fail(f"{name} refers to unknown image_id {a.get('image_id')}")
        if "category_id" in a and a["category_id"] not in cats:
            fail(f"{name} has category_id {a['category_id']}, which is not in 'categories'")
        if "id" not in a:
            unnamed.append(a)
        elif a["id"] in ann_ids:
            fail(f"annotation id {a['id']!r} appears twice; annotation ids must be unique "
                 f"(evaluation would match the wrong annotations)")
        else:
            ann_ids.add(a["id"])
        problem = _box_problem(a)
        if problem:
            fail(f"{name} (image {a['image_id']}) {problem}; fix or remove that annotation")
        seg = a.get("segmentation")
        if seg is None:
            if "point_coords" not in a:
                fail(f"{name} has no segmentation (bbox only); give it a polygon or RLE mask, "
                     f"or point_coords/point_labels for point supervision")
            continue
        problem = _mask_problem(seg, *sizes[a["image_id"]], runs_checked=True)
        if problem:
            fail(f"{name} (image {a['image_id']}) {problem}; fix or remove that annotation")
        if isinstance(seg, dict) and isinstance(seg["counts"], str):
            deferred.append(i)
        if "bbox" not in a or "area" not in a:
            unboxed.append(a)
    # compressed RLE strings: their runs checked together (the slow part on COCO-size files)
    for lo in range(0, len(deferred), 20_000):   # chunks: a dozen int64 arrays per character
        chunk = deferred[lo:lo + 20_000]
        segs = [data["annotations"][i]["segmentation"] for i in chunk]
        try:
            sums, ok = rle_sums([sg["counts"] for sg in segs])
        except UnicodeEncodeError:                          # non-ASCII: found one by one below
            sums, ok = np.zeros(len(segs), np.int64), np.zeros(len(segs), bool)
        area = np.array([sg["size"][0] * sg["size"][1] for sg in segs], np.int64)
        for j in np.flatnonzero(~ok | (sums != area)):
            a = data["annotations"][chunk[j]]
            problem = _mask_problem(a["segmentation"], *sizes[a["image_id"]])
            if problem:
                fail(f"{_name(a, chunk[j])} (image {a['image_id']}) {problem}; fix or remove "
                     f"that annotation")
    for a in unboxed:  # only masks that passed the checks above
        _fill_box(a, *sizes[a["image_id"]])
    top = max((v for v in ann_ids if isinstance(v, int)), default=0)
    for k, a in enumerate(unnamed, start=1):
        a["id"] = top + k
    return data


def _finite(v) -> bool:
    return type(v) in _NUMBER and math.isfinite(v)


def _box_problem(a: dict) -> str | None:
    box = a.get("bbox")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4 or not all(map(_finite, box)):
            return f"has bbox {box!r}, not 4 finite numbers [x, y, width, height]"
        if box[2] < 0 or box[3] < 0:
            return f"has a bbox of negative size {box[2]}x{box[3]}"
    if "area" in a and not (_finite(a["area"]) and a["area"] >= 0):
        return f"has area {a['area']!r}, not a finite number >= 0"
    pts = a.get("point_coords")
    if pts is not None and not (isinstance(pts, list) and all(
            isinstance(p, list) and len(p) == 2 and all(map(_finite, p)) for p in pts)):
        return "has point_coords that are not [x, y] pairs of finite numbers"
    return None


def _fill_box(a: dict, h, w) -> None:
    """bbox and area from the mask, as pycocotools computes them (COCOeval reads both)."""
    from pycocotools import mask as mask_utils
    seg = a["segmentation"]
    if isinstance(seg, list):
        if h is None:  # image size unknown: the polygons' extent
            xs = [v for poly in seg for v in poly[0::2]]
            ys = [v for poly in seg for v in poly[1::2]]
            h, w = int(math.ceil(max(ys))) + 1, int(math.ceil(max(xs))) + 1
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, *seg["size"])
    else:
        rle = seg
    a.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
    a.setdefault("area", float(mask_utils.area(rle)))


def _name(a: dict, i: int) -> str:
    return f"annotation {a.get('id', '#' + str(i))}"
