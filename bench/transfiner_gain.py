"""Probe: does a trained Mask Transfiner refiner beat its own coarse head, and how far from
the coarse contour do the coarse masks err?

For a `maskrcnn.refine=transfiner` run (its config.yaml and model.pt), on the first --images
images of a split with ground truth: every refined RoI's coarse mask and refined mask are
taken from the refiner's own call (a forward hook), the ground truth of the object it
matches (box IoU >= 0.5) is RoI-aligned on the same box, and both masks are scored by mask
IoU at the refined grid. Then, at image size, the pixels a detection (score >= 0.5, mask
IoU >= 0.5 with an object) gets wrong, by their distance to its predicted contour in
28-grid cells of its box: how wide a band of nodes would have to be to reach them.
    .venv/bin/python bench/transfiner_gain.py RUN [--split val] [--images 16] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401  (puts the repository on the path)


def matched_iou(captured, gts):
    """Mean mask IoU (coarse, refined) of the refined RoIs that match an object."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import box_iou, roi_align

    from pipeline.models.transfiner.incoherence import coverage_fraction
    args, out = captured
    image_of_roi, boxes, coarse, refined = args[1], args[2], args[4], out["masks"]
    m = refined.shape[-1]
    scores = {"coarse": [], "refined": []}
    for k, (masks, gt_boxes) in enumerate(gts):
        sel = torch.nonzero(image_of_roi == k, as_tuple=True)[0]
        if len(sel) == 0 or len(gt_boxes) == 0:
            continue
        best, j = box_iou(boxes[sel], gt_boxes).max(1)
        rois = torch.cat([j[:, None].float(), boxes[sel]], 1)
        truth = coverage_fraction(roi_align(masks[:, None], rois, (2 * m, 2 * m), 1.0)[:, 0]
                                  >= 0.5, m) >= 0.5
        up = F.interpolate(coarse[sel][:, None], size=(m, m), mode="bilinear",
                           align_corners=False)[:, 0]
        for name, mask in (("coarse", up), ("refined", refined[sel])):
            inter = ((mask >= 0.5) & truth).flatten(1).sum(1).float()
            union = ((mask >= 0.5) | truth).flatten(1).sum(1).float().clamp(min=1)
            scores[name] += (inter / union)[best >= 0.5].tolist()
    return scores


def error_distances(dets, gts, bins=8):
    """Share of wrongly predicted pixels by distance (28-grid cells of the box) to the
    predicted contour."""
    import numpy as np
    from scipy import ndimage as ndi
    hist = np.zeros(bins)
    for det, (masks, _) in zip(dets, gts):
        truth = masks.numpy() > 0
        for mask, score, box in zip(det["masks"][:, 0].numpy() >= 0.5, det["scores"].tolist(),
                                    det["boxes"].tolist()):
            if score < 0.5 or not mask.any() or not len(truth):
                continue
            ious = (truth & mask).sum((1, 2)) / np.maximum((truth | mask).sum((1, 2)), 1)
            if ious.max() < 0.5:
                continue
            cell = max(np.sqrt((box[2] - box[0]) * (box[3] - box[1])) / 28, 1e-3)
            contour = mask ^ ndi.binary_erosion(mask)
            dist = ndi.distance_transform_edt(~contour) / cell
            wrong = mask ^ truth[ious.argmax()]
            hist += np.bincount(np.minimum(dist[wrong].astype(int), bins - 1), minlength=bins)
    return hist / max(hist.sum(), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from pipeline.data.coco import annotations_by_image, decode_segmentation
    from pipeline.data.datasets import get_split
    from pipeline.data.images import read_rgb
    from pipeline.models.students import build_student
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    cfg = OmegaConf.load(run / "config.yaml")
    model = build_student(cfg, 1).model
    model.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    split = get_split(cfg.dataset, a.split)
    infos = sorted(split.images, key=lambda im: im["id"])[:a.images]
    by_image = annotations_by_image(split.coco)
    images, gts = [], []
    for info in infos:
        if min(info["height"], info["width"]) != cfg.maskrcnn.inference.short_side:
            raise SystemExit(f"{info['file_name']}: this probe compares boxes at image size; "
                             "it needs images at maskrcnn.inference.short_side")
        images.append(torch.from_numpy(np.array(read_rgb(split.image_root / info["file_name"])))
                      .permute(2, 0, 1).float() / 255)
        anns = by_image.get(info["id"], [])
        h, w = info["height"], info["width"]
        masks = [decode_segmentation(x["segmentation"], h, w) for x in anns]
        boxes = [[x["bbox"][0], x["bbox"][1], x["bbox"][0] + x["bbox"][2],
                  x["bbox"][1] + x["bbox"][3]] for x in anns]
        gts.append((torch.from_numpy(np.stack(masks)).float() if masks else
                    torch.zeros(0, h, w), torch.tensor(boxes).reshape(-1, 4)))
    captured = []
    model.refiner.register_forward_hook(lambda mod, args, out: captured.append((args, out)))
    with torch.no_grad():
        dets = model(images)
    scores = matched_iou(captured[0], gts)
    share = error_distances(dets, gts)
    result = {"run": str(run), "split": a.split, "images": len(images),
              "matched_rois": len(scores["coarse"]),
              "iou_coarse": round(float(np.mean(scores["coarse"])), 3),
              "iou_refined": round(float(np.mean(scores["refined"])), 3),
              "error_share_by_cells_from_contour": [round(float(x), 3) for x in share]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
