"""Stage `refine`: Mask Transfiner's refiner (Ke et al., CVPR 2022, Sec. 3) applied to any COCO
file of masks, e.g. SOLO's pseudo-labels before they go to annotators (docs/transfiner.md).

Each mask's box is its extent; its coarse 28 x 28 mask is the mask read inside the box (RoI
Align, as Mask R-CNN's mask targets); the refiner of a trained `maskrcnn.refine=transfiner`
run (`refine.weights`) refines it on its incoherent quadtree nodes with that run's backbone
features, and the refined mask is pasted back into the image. Every other field of an
annotation (score, category, points) is kept. Writes `refined_<split>.json` and, where the
split has ground truth, the mask AP / boundary AP of the input and the refined masks.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import open_dict
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import roi_align

from pipeline import dist
from pipeline.data.coco import annotations_by_image, decode_segmentation, load_coco, \
    mask_to_annotation
from pipeline.data.datasets import get_split
from pipeline.data.strong_views import masks_to_boxes
from pipeline.data.transforms import resized_shape, to_tensor
from pipeline.errors import UserError
from pipeline.eval.coco_eval import evaluate, format_table
from pipeline.models.students import build_student
from pipeline.provenance import BATCHING, file_identity, settings
from pipeline.reporting import predict_splits, update_json

log = logging.getLogger(__name__)
PREDICTOR = "maskrcnn.roi_heads.mask_predictor.mask_fcn_logits.weight"  # (classes + 1, C, 1, 1)


def load_refiner(cfg, device):
    """Mask R-CNN + Transfiner of `refine.weights`, built with this config's maskrcnn.* and
    backbone.* settings (those it was trained with)."""
    path = cfg.refine.weights
    if not path or not Path(str(path)).is_file():
        raise UserError(f"refine.weights={path}: not found; set it to the model.pt of a "
                        f"stage=maskrcnn maskrcnn.refine=transfiner run")
    state = torch.load(str(path), map_location=device, weights_only=True)
    if PREDICTOR not in state or not any(k.startswith("refiner.") for k in state):
        raise UserError(f"refine.weights={path} holds no Mask Transfiner; train one with "
                        f"stage=maskrcnn maskrcnn.refine=transfiner")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model, cfg.maskrcnn.refine = "maskrcnn", "transfiner"
    model = build_student(cfg, int(state[PREDICTOR].shape[0]) - 1, "maskrcnn").model
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"refine.weights={path} was trained with other maskrcnn.* / backbone.* "
                        f"settings; pass the ones of its run (its config.yaml)") from None
    return model.to(device).eval()


class MaskRefiner:
    """(info, image) list -> refined annotations per image (a pipeline.sharded Predictor)."""

    def __init__(self, model, by_image: dict, inference, device):
        self.model, self.by_image, self.c, self.device = model, by_image, inference, device
        self.size = model.p.sizes[0]
        self.kept = 0  # refined masks that came out empty: the input mask is kept

    def __call__(self, items):
        return [self.one(info, arr) for info, arr in items]

    @torch.no_grad()
    def one(self, info, arr) -> list[dict]:
        anns = self.by_image.get(info["id"], [])
        h, w = arr.shape[:2]
        masks = [decode_segmentation(a["segmentation"], h, w) for a in anns]
        use = [i for i, m in enumerate(masks) if m.any()]  # an empty mask has no box: as is
        out = [dict(a) for a in anns]
        if not use:
            return out
        stack = torch.from_numpy(np.stack([masks[i] for i in use]))
        boxes = masks_to_boxes(stack)          # each mask's extent, pixel edges included
        stack = stack.float()[:, None]
        rois = torch.cat([torch.arange(len(use), dtype=torch.float32)[:, None], boxes], 1)
        coarse = roi_align(stack, rois, (self.size, self.size), 1.0)[:, 0]
        shape = resized_shape(h, w, int(self.c.short_side), int(self.c.max_size))
        scale = torch.tensor([shape[1] / w, shape[0] / h] * 2)
        image = to_tensor(arr, shape).to(self.device) / 255.0
        fine = self.model.refine_given([image], [(boxes * scale).to(self.device)],
                                       [coarse.to(self.device)])[0].cpu()
        pasted = paste_masks_in_image(fine[:, None], boxes, (h, w), padding=1)[:, 0]
        binary = (pasted >= float(self.c.mask_threshold)).numpy()
        for k, i in enumerate(use):
            if not binary[k].any():
                self.kept += 1
                continue
            a = anns[i]
            extra = {key: v for key, v in a.items()
                     if key not in ("id", "image_id", "category_id", "segmentation", "area",
                                    "bbox", "iscrowd")}
            out[i] = mask_to_annotation(binary[k], a["image_id"], a.get("category_id", 1),
                                        **extra)
        return out


def run(cfg) -> dict:
    rc = cfg.refine
    if not rc.masks:
        raise UserError("refine.masks is not set: name a COCO file of masks on the images of "
                        "refine.split (e.g. refine.masks=outputs/.../predictions_train.json)")
    device = dist.init(cfg.hardware.device)
    split = get_split(cfg.dataset, rc.split)
    source = load_coco(rc.masks, "refine.masks")
    names = {im["id"]: im["file_name"] for im in split.images}
    stray = sorted({a["image_id"] for a in source["annotations"]} - set(names))
    # ids are per split (1.. in each): the file names say whose images they are
    stray += [im["id"] for im in source["images"]
              if im["id"] in names and im.get("file_name", names[im["id"]]) != names[im["id"]]]
    if stray:
        raise UserError(f"refine.masks={rc.masks} has masks on {len(stray)} image(s) not in "
                        f"split {rc.split!r} (e.g. id {stray[0]}); set refine.split to its split")
    model = load_refiner(cfg, device)
    refiner = MaskRefiner(model, annotations_by_image(source), cfg.maskrcnn.inference, device)
    out_dir = Path(cfg.run_dir)
    node = cfg.maskrcnn
    summaries = predict_splits(
        cfg, refiner, [rc.split], out_dir, prefix="refined",
        config_key=["refine", file_identity(rc.masks), file_identity(rc.weights),
                    settings(node, BATCHING), settings(cfg.backbone)],
        shard_size=int(node.inference.shard_size), desc=f"refine {rc.split}",
        title=f"refined ({rc.split})", categories=source.get("categories"))
    if refiner.kept:
        log.info("%d refined mask(s) came out empty: their input masks are kept", refiner.kept)
    if split.has_gt and dist.is_main():
        ids = [im["id"] for im in split.images]
        before = evaluate(split.coco, source["annotations"], image_ids=ids)
        print(format_table({f"input ({rc.split})": before,
                            f"refined ({rc.split})": summaries[rc.split]["metrics"]}))
        update_json(out_dir / "metrics.json", f"{rc.split}_input", {"masks": str(rc.masks),
                                                                     "metrics": before})
    return summaries
