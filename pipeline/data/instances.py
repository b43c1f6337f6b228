"""Training batches of images with instance targets (masks and/or points), seeded per iteration.

One loader for every instance-segmentation trainer (SOLO on pseudo-masks, Mask R-CNN on
masks or points). Augmentation moves masks, boxes and points together: a horizontal flip,
a resize of the short side to one of `train_sizes`, and optionally a scale jitter that zooms
the content in or out inside a canvas of that size.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.coco import annotations_by_image, decode_segmentation
from pipeline.data.datasets import Split
from pipeline.data.sampling import epoch_index, read_or_skip
from pipeline.data.strong_views import masks_to_boxes
from pipeline.data.transforms import resized_shape
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def flip_resize_points(points: torch.Tensor, scale_xy, flip: bool, width: int) -> torch.Tensor:
    """(..., 2) x, y in pixels -> the same points after resize (then flip) of the image."""
    out = points * torch.tensor(scale_xy, dtype=points.dtype)
    if flip:
        out[..., 0] = width - out[..., 0]
    return out


def flip_resize_boxes(boxes: torch.Tensor, scale_xy, flip: bool, width: int) -> torch.Tensor:
    """(N, 4) xyxy -> after resize (then flip)."""
    sx, sy = scale_xy
    out = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    if flip:
        out = torch.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], 1)
    return out


def flip_resize_masks(masks: torch.Tensor, size, flip: bool) -> torch.Tensor:
    """(N, H, W) bool -> (N, h, w) bool, bilinear + 0.5 threshold (as detectron2 does)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    out = masks
    if tuple(masks.shape[-2:]) != tuple(size):
        out = F.interpolate(masks[None].float(), size=size, mode="bilinear",
                            align_corners=False)[0] >= 0.5
    return out.flip(-1) if flip else out


class InstanceBank:
    """Images of a split with the instance annotations of `targets` (a COCO dict)."""

    def __init__(self, split: Split, targets: dict, *, category_map: dict | None = None,
                 keep_empty: bool = False, cache: bool = True, min_area: float = 1.0):
        ids = {im["id"] for im in split.images}
        # crowd regions are no instances: never a target (detectron2's mapper drops them)
        by_image = annotations_by_image(
            {"images": split.images, "annotations": [
                a for a in targets["annotations"]
                if a["image_id"] in ids and not a.get("iscrowd", 0)]})
        self.split, self.cache = split, cache
        self.category_map = category_map  # COCO category id -> contiguous label (0..C-1)
        self.items = []
        for info in sorted(split.images, key=lambda im: im["id"]):
            anns = [a for a in by_image[info["id"]] if a.get("area", min_area) >= min_area
                    and a.get("bbox", [0, 0, 1, 1])[2] > 0 and a.get("bbox", [0, 0, 1, 1])[3] > 0]
            if anns or keep_empty:
                self.items.append((info, anns))
        if not self.items:
            raise UserError(f"no training images with annotations in split {split.name!r} "
                            f"(targets: {len(targets['annotations'])} annotations); check the "
                            f"pseudo-label or annotation file")
        self._cache: dict[int, dict | None] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, i: int) -> dict | None:
        if i in self._cache:
            return self._cache[i]
        info, anns = self.items[i]
        arr = read_or_skip(self.split, info)
        if arr is None:
            self._cache[i] = None
            return None
        h, w = arr.shape[:2]
        rec = {"image": torch.from_numpy(np.array(arr)).permute(2, 0, 1), "id": info["id"]}
        labels = [self.category_map[a["category_id"]] if self.category_map else 0 for a in anns]
        rec["labels"] = torch.tensor(labels, dtype=torch.long)
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        rec["boxes"] = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
        if all("segmentation" in a for a in anns):
            rec["masks"] = torch.from_numpy(np.stack(
                [decode_segmentation(a["segmentation"], h, w) for a in anns])
                if anns else np.zeros((0, h, w), np.uint8)).bool()
        if anns and all("point_coords" in a for a in anns):
            # +0.5: PointSup stores integer pixel indices; the point is the pixel's centre
            rec["points"] = torch.tensor([a["point_coords"] for a in anns],
                                         dtype=torch.float32) + 0.5
            rec["point_labels"] = torch.tensor([a["point_labels"] for a in anns],
                                               dtype=torch.float32)
        if anns and all("embedding" in a for a in anns):
            rec["embeddings"] = torch.tensor([a["embedding"] for a in anns], dtype=torch.float32)
        if self.cache:
            self._cache[i] = rec
        return rec

    def batch(self, it: int, size: int, seed: int, train_sizes=(0,), max_size: int = 0,
              flip: bool = True, rank: int = 0, world: int = 1,
              sample_points: int = 0, scale_jitter=(1.0, 1.0),
              letterbox: bool = False) -> list[dict]:
        """The augmented samples of iteration `it` (same `it` -> same batch, for resume);
        sample_points > 0: that many of each instance's points, drawn per instance from
        (seed, it, rank, slot), never from the global RNG; scale_jitter (lo, hi) != (1, 1):
        the content zoomed by a factor drawn log-uniformly from [lo, hi] (see `jitter`);
        letterbox: the size drawn from train_sizes is the longer side's (max_size unused)."""
        out, misses = [], 0
        pos = (it * world + rank) * size
        while len(out) < size:
            rec = self._load(epoch_index(seed, pos, len(self)))
            pos += 1
            if rec is None:
                misses += 1
                if misses >= len(self):
                    raise UserError(f"no image of split {self.split.name!r} could be read; "
                                    f"see the warnings above")
                continue
            rng = np.random.default_rng([seed, it, rank, len(out)])
            short = int(rng.choice(list(train_sizes)))
            sample = self.augment(rec, short, short if letterbox else max_size,
                                  flip and rng.random() < 0.5)
            lo, hi = (float(v) for v in scale_jitter)
            if (lo, hi) != (1.0, 1.0):  # drawn only when on: batches without it stay as they were
                sample = jitter(sample, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                                (float(rng.random()), float(rng.random())))
            if sample_points and "points" in sample and sample["points"].shape[1] > sample_points:
                keep = torch.from_numpy(np.stack([rng.permutation(sample["points"].shape[1])
                                                  [:sample_points] for _ in sample["points"]]))
                sample["points"] = sample["points"].gather(1, keep[..., None].expand(-1, -1, 2))
                sample["point_labels"] = sample["point_labels"].gather(1, keep)
            out.append(sample)
        return out

    @staticmethod
    def augment(rec: dict, short_side: int, max_size: int, flip: bool) -> dict:
        img = rec["image"]
        h, w = img.shape[1:]
        nh, nw = resized_shape(h, w, short_side, max_size) if short_side else (h, w)
        scale = (nw / w, nh / h)
        image = img.float()
        if (nh, nw) != (h, w):
            image = F.interpolate(image[None], size=(nh, nw), mode="bilinear",
                                  align_corners=False, antialias=True)[0]
        if flip:
            image = image.flip(-1)
        out = {"image": image, "id": rec["id"], "labels": rec["labels"],
               "boxes": flip_resize_boxes(rec["boxes"], scale, flip, nw)}
        if "masks" in rec:
            out["masks"] = flip_resize_masks(rec["masks"], (nh, nw), flip)
        if "points" in rec:
            pts = flip_resize_points(rec["points"], scale, flip, nw)
            lab = rec["point_labels"].clone()
            outside = (pts[..., 0] < 0) | (pts[..., 0] > nw) | (pts[..., 1] < 0) | \
                (pts[..., 1] > nh)
            lab[outside] = -1  # PointSup: points outside the image are ignored
            out["points"], out["point_labels"] = pts, lab
        if "embeddings" in rec:
            out["embeddings"] = rec["embeddings"]
        return out


def mean_colour(image: torch.Tensor) -> torch.Tensor:
    """(3, h, w) -> (3, 1, 1) mean colour, rounded to a whole value: a float32 mean depends on
    how many threads summed it, and batches made in loader workers must equal those made in
    the training thread (exact resume)."""
    return image.double().mean((-2, -1)).round().to(image.dtype)[..., None, None]


def jitter(sample: dict, factor: float, where: tuple[float, float]) -> dict:
    """Zoom the content by `factor` inside a canvas of the sample's size (Large Scale Jitter,
    Ghiasi et al., CVPR 2021, Sec. 3): < 1 shrinks it onto a mean-colour canvas, > 1 crops a
    window; `where` (y, x) in [0, 1) places it in the free room. Objects change their size
    relative to the image, so a model cannot find them by image-relative position alone
    (SOLO's CoordConv); instances cropped out entirely are dropped."""
    image = sample["image"]
    h, w = image.shape[1:]
    ch, cw = max(1, round(h * factor)), max(1, round(w * factor))
    oy, ox = round((h - ch) * where[0]), round((w - cw) * where[1])  # content's top-left
    sy, sx = ch / h, cw / w

    def place(content: torch.Tensor, fill) -> torch.Tensor:
        canvas = fill.expand(content.shape[0], h, w).clone()
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + ch, h), min(ox + cw, w)
        canvas[:, y0:y1, x0:x1] = content[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        return canvas

    # the antialiased kernel also when enlarging (where it is plain bilinear): torch's other
    # bilinear path gives results that depend on the thread count, and batches made in loader
    # workers must equal those made in the training thread (exact resume)
    content = F.interpolate(image[None], size=(ch, cw), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    out = dict(sample, image=place(content, mean_colour(image)))
    shift = torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
    boxes = (sample["boxes"] * torch.tensor([sx, sy, sx, sy]) + shift)
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                         boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    if "masks" in sample:
        masks = place(flip_resize_masks(sample["masks"], (ch, cw), False),
                      torch.zeros((), dtype=torch.bool))
        keep &= masks.flatten(1).any(1)
        out["masks"] = masks[keep]
        if keep.any():
            boxes[keep] = masks_to_boxes(out["masks"])
    if "points" in sample:
        pts = sample["points"] * torch.tensor([sx, sy]) + torch.tensor([float(ox), float(oy)])
        lab = sample["point_labels"].clone()
        lab[(pts[..., 0] < 0) | (pts[..., 0] > w) | (pts[..., 1] < 0) | (pts[..., 1] > h)] = -1
        out["points"], out["point_labels"] = pts[keep], lab[keep]
    out["boxes"], out["labels"] = boxes[keep], sample["labels"][keep]
    if "embeddings" in sample:
        out["embeddings"] = sample["embeddings"][keep]
    return out


def pad_batch(samples: list[dict], divisor: int = 32,
              square: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images into (B, 3, H, W) padded to a multiple of `divisor`; also a valid mask.
    square: H = W, the padding in each image's mean colour (see `pad_square`)."""
    hs = max(s["image"].shape[1] for s in samples)
    ws = max(s["image"].shape[2] for s in samples)
    hs, ws = -(-hs // divisor) * divisor, -(-ws // divisor) * divisor
    if square:
        hs = ws = max(hs, ws)
    images = torch.zeros(len(samples), 3, hs, ws)
    valid = torch.zeros(len(samples), hs, ws, dtype=torch.bool)
    for i, s in enumerate(samples):
        h, w = s["image"].shape[1:]
        if square:
            images[i] = mean_colour(s["image"])
        images[i, :, :h, :w] = s["image"]
        valid[i, :h, :w] = True
    return images, valid


def pad_square(batch: torch.Tensor, divisor: int = 32) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 3, S, S), S the longer side rounded up to `divisor`, padded right
    and bottom in each image's mean colour. SOLO divides the input into S x S grid cells
    whatever its shape: on a square canvas the cells stay square, so a model trained on
    square images does not meet squashed cells on a tall or wide one."""
    s = -(-max(batch.shape[-2:]) // divisor) * divisor
    out = mean_colour(batch).expand(-1, -1, s, s).clone()
    out[..., :batch.shape[-2], :batch.shape[-1]] = batch
    return out
