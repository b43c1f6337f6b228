"""What the labelling assistant computes: a trained student's (Mask R-CNN or AdaMixer) mask
for a box an annotator drew, and the points to ask about, placed where that mask is least
certain.

Uniform points (PointSup Sec. 4) spend most clicks where the model is already sure (the middle
of the object, the corners of the box); asking about the pixels nearest p = 0.5 puts the
annotator's clicks on the boundary the model gets wrong, the same idea as PointRend's
uncertainty sampling (Kirillov et al., CVPR 2020, Sec. 3.1) applied to labels instead of
computation. Results are Label Studio regions (annotation.protocol) so the ML backend can
return them as they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict

from annotation.protocol import (BOX, IMAGE, MASK, MODEL_MASK, box_result, point_result,
                                 to_pixels)
from pipeline.data.transforms import resized_shape, to_tensor
from pipeline.errors import UserError


def box_window(box, h: int, w: int) -> tuple[int, int, int, int]:
    """The pixels a box (x0, y0, x1, y1) touches, clipped to an h x w image (may be empty)."""
    return (max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0),
            min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h))


def uncertain_points(prob: np.ndarray, box, n: int) -> list[tuple[float, float, bool]]:
    """Up to n pixel centres inside box (x0, y0, x1, y1) in order of uncertainty
    |p - 0.5| (least certain first), at least ~ box_side / (2 sqrt n) apart so that
    they do not bunch on one stretch of the boundary; each with its label p >= 0.5."""
    x0, y0, x1, y1 = box_window(box, *prob.shape)
    if x1 <= x0 or y1 <= y0 or n <= 0:
        return []
    crop = prob[y0:y1, x0:x1]
    u = np.abs(crop - 0.5).astype(np.float64)           # lower: less certain
    yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
    spacing = max(1.0, 0.5 * min(x1 - x0, y1 - y0) / np.sqrt(n))
    chosen: list[tuple[float, float, bool]] = []
    while len(chosen) < n:
        i = int(np.argmin(u))                              # first in row order among ties
        y, x = divmod(i, u.shape[1])
        if not np.isfinite(u[y, x]):
            break
        chosen.append((x0 + x + 0.5, y0 + y + 0.5, bool(crop[y, x] >= 0.5)))
        u[(xx - x) ** 2 + (yy - y) ** 2 < spacing ** 2] = np.inf   # keep the next ones apart
    return chosen


def uniform_points(prob: np.ndarray, box, n: int) -> list[tuple[float, float, bool]]:
    """n points uniform in box (x0, y0, x1, y1), PointSup's protocol (Sec. 4) as the
    pre-annotations place theirs, each with its label p >= 0.5. Seeded by the box, so the
    same box gets the same points."""
    x0, y0, x1, y1 = box_window(box, *prob.shape)
    if x1 <= x0 or y1 <= y0 or n <= 0:
        return []
    rng = np.random.default_rng([x0, y0, x1, y1])
    xs, ys = x0 + rng.random(n) * (x1 - x0), y0 + rng.random(n) * (y1 - y0)
    return [(float(x), float(y), bool(prob[int(y), int(x)] >= 0.5)) for x, y in zip(xs, ys)]


# where the assistant puts the points of a box (annotation.assistant.placement)
PLACEMENTS = {"uncertain": uncertain_points, "uniform": uniform_points}


def brush_result(mask: np.ndarray, rid: str) -> dict:
    """A binary mask as a Label Studio brush region (its own RLE, not COCO's)."""
    from label_studio_sdk.converter.brush import mask2rle
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": MASK, "to_name": IMAGE,
            "original_width": w, "original_height": h, "image_rotation": 0,
            "readonly": True,  # shown to check points against, never edited or synced
            "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255),
                      "brushlabels": [MODEL_MASK]}}


def box_regions(prob: np.ndarray, box, n_points: int, box_id: str, label: str,
                with_box: bool, with_mask: bool = True,
                placement: str = "uniform") -> list[dict]:
    """Points (listed first: Label Studio stacks regions in list order), the box, and the mask
    overlay last (when the project has a brush control). Point ids `<box id>_p<j>` tie each
    point to its box in sync. `placement`: a key of PLACEMENTS."""
    h, w = prob.shape
    out = [point_result(x, y, w, h, obj, f"{box_id}_p{j}", box_id if with_box else None)
           for j, (x, y, obj) in enumerate(PLACEMENTS[placement](prob, box, n_points))]
    if with_box:
        out.append(box_result([box[0], box[1], box[2] - box[0], box[3] - box[1]], w, h, label,
                              box_id))
    if with_mask:
        out.append(brush_result(prob >= 0.5, f"{box_id}_mask"))
    return out


# the students the assistant can serve (annotation.assistant.model)
SERVED = ("maskrcnn", "adamixer")


def run_model(run_dir) -> str:
    """The student a finished run folder holds (its config.yaml's `model`)."""
    return str(OmegaConf.load(Path(run_dir) / "config.yaml").get("model", "maskrcnn"))


class Assistant:
    """A trained student run (its folder: config.yaml + model.pt) on the CPU or GPU: Mask
    R-CNN, or AdaMixer (its query boxes, Gao et al. CVPR 2022, with the mask head on them).
    Both answer the same two questions: the mask of a box, and the model's own instances."""

    def __init__(self, run_dir, device: str = "cpu"):
        from pipeline.models.students import build_student
        run_dir = Path(run_dir)
        cfg_file, weights = run_dir / "config.yaml", run_dir / "model.pt"
        for f in (cfg_file, weights):
            if not f.is_file():
                raise UserError(f"{f} not found: point the assistant at a finished Mask R-CNN "
                                f"or AdaMixer run (e.g. `make maskrcnn`, "
                                f"outputs/<experiment>/maskrcnn_points)")
        cfg = OmegaConf.load(cfg_file)
        self.kind = str(cfg.get("model", "maskrcnn"))
        if self.kind not in SERVED:
            raise UserError(f"{run_dir} is a {self.kind} run; the assistant serves "
                            f"{' or '.join(SERVED)}")
        with open_dict(cfg):
            cfg.backbone.weights = None   # model.pt holds every weight
        state = torch.load(weights, map_location="cpu", weights_only=True)
        classes = (state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
                   if self.kind == "maskrcnn" else state["stages.0.cls.weight"].shape[0])
        self.student = build_student(cfg, classes, self.kind)
        self.model = self.student.model.eval().to(device)
        self.model.load_state_dict(state)
        self.device, self.node = torch.device(device), cfg[self.kind].inference
        self.version = f"{run_dir.name}@{int(weights.stat().st_mtime)}"

    def _resized(self, image: np.ndarray):
        """The image at the model's inference size ([0, 255], 3 x h x w), and that size."""
        h, w = image.shape[:2]
        shape = resized_shape(h, w, int(self.node.short_side), int(self.node.max_size))
        return to_tensor(image, shape).to(self.device), shape

    def _input(self, image: np.ndarray):
        """Mask R-CNN's input ([0, 1]; it normalises and pads itself), and its size."""
        x, shape = self._resized(image)
        return x / 255.0, shape

    def _adamixer_input(self, image: np.ndarray):
        """AdaMixer's input: normalised, padded to a multiple of 32, with its size."""
        from pipeline.models.backbone import normalize
        x, shape = self._resized(image)
        hp, wp = [-(-d // 32) * 32 for d in shape]
        x = F.pad(x, (0, wp - shape[1], 0, hp - shape[0]))
        return normalize(x[None]), torch.tensor([list(shape)], device=self.device), shape

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes) -> np.ndarray:
        """(B, H, W) object probabilities for boxes (x0, y0, x1, y1) in image pixels: the
        mask head run on each box as its RoI (one backbone pass), pasted into the image."""
        from torchvision.models.detection.roi_heads import paste_masks_in_image
        h, w = image.shape[:2]
        if self.kind == "adamixer":
            x, _, shape = self._adamixer_input(image)
            levels = self.model.space(self.model.backbone(x))
            b = self._scaled(boxes, shape, h, w)
            logits = self.model.mask_head(levels, self.model.space.strides, [b])
        else:
            x, shape = self._input(image)
            images, _ = self.model.transform([x])
            feats = self.model.backbone(images.tensors)
            b = self._scaled(boxes, shape, h, w)
            heads = self.model.roi_heads
            logits = heads.mask_predictor(heads.mask_head(
                heads.mask_roi_pool(feats, [b], images.image_sizes)))[:, 1:]
        prob = logits.float().sigmoid().max(1, keepdim=True).values   # agnostic over classes
        pasted = paste_masks_in_image(prob, b, shape)                  # (B, 1, h', w')
        return F.interpolate(pasted, size=(h, w), mode="bilinear",
                             align_corners=False)[:, 0].cpu().numpy()

    def _scaled(self, boxes, shape, h: int, w: int) -> torch.Tensor:
        s = torch.tensor([shape[1] / w, shape[0] / h] * 2, device=self.device)
        return torch.tensor(boxes, dtype=torch.float32, device=self.device).view(-1, 4) * s

    @torch.no_grad()
    def detect(self, image: np.ndarray, score_threshold: float) -> list[tuple[list, np.ndarray,
                                                                              float]]:
        """The model's own instances: (box x0y0x1y1, probability map, score) each."""
        h, w = image.shape[:2]
        if self.kind == "adamixer":
            from pipeline.models.adamixer.model import InferenceParams
            x, sizes, shape = self._adamixer_input(image)
            p = InferenceParams(score_threshold, int(self.node.max_per_image))
            masks, scores, _, boxes = self.model.predict(self.model(x, sizes), 0, shape, p)
            out = {"boxes": boxes, "masks": masks, "scores": scores}
        else:
            x, shape = self._input(image)
            out = self.model([x])[0]
        keep = out["scores"] >= score_threshold
        s = torch.tensor([w / shape[1], h / shape[0]] * 2)
        res = []
        for box, m, score in zip(out["boxes"][keep].cpu(), out["masks"][keep],
                                 out["scores"][keep].tolist()):
            prob = F.interpolate(m[None].float(), size=(h, w), mode="bilinear",
                                 align_corners=False)[0, 0].cpu().numpy()
            res.append(((box * s).tolist(), prob, score))
        return res


def labelled_by(assistant: Assistant, coco: dict, image_root) -> dict:
    """`coco` (pre-annotations) with each instance's mask replaced by the assistant's mask for
    its box (the mask head run on the box, `masks_for_boxes`): its points are then labelled
    by the assistant, not by the source's own mask (a variant `bench/annotation_session.py
    --plan-only` costs). Boxes and scores stay the source's."""
    from pipeline.data.coco import annotations_by_image, encode_mask
    from pipeline.data.images import read_rgb
    anns = []
    by_image = annotations_by_image(coco)
    for im in coco["images"]:
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in by_image.get(im["id"], [])]
        if not boxes:
            continue
        probs = assistant.masks_for_boxes(read_rgb(Path(image_root) / im["file_name"]), boxes)
        anns += [dict(a, segmentation=encode_mask(prob >= 0.5))
                 for a, prob in zip(by_image[im["id"]], probs)]
    return dict(coco, annotations=anns)


def drawn_boxes(context: dict | None) -> list[tuple[str, list[float], str]]:
    """The box an annotator just drew, from Label Studio's interactive context:
    [(region id, x0 y0 x1 y1 in pixels, label)] or [].

    Label Studio 1.23.2 sends every box of the smart control as context, the pre-annotated
    ones (origin "prediction") and earlier drawings included, the new one last (seen in the
    simulated annotation run); answering them all put a second set of unchecked model points
    on every pre-annotated box. So only the last box drawn by hand is answered."""
    boxes = []
    for r in (context or {}).get("result") or []:
        if r.get("type") != "rectanglelabels" or r.get("from_name", BOX) != BOX:
            continue
        v = r.get("value") or {}
        try:
            w, h = float(r["original_width"]), float(r["original_height"])
            x0, y0, bw, bh = to_pixels(v, w, h)
        except (KeyError, TypeError, ValueError):
            continue
        boxes.append((r.get("origin"), (str(r.get("id") or "drawn"), [x0, y0, x0 + bw, y0 + bh],
                                        (v.get("rectanglelabels") or ["object"])[0])))
    manual = [b for origin, b in boxes if origin == "manual"]
    return manual[-1:] or [b for _, b in boxes][-1:]
