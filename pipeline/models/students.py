"""The models a user deploys after labelling ("students"), behind one interface: build from
the config, losses of a training batch, predictions for a batch of same-size images.

`maskrcnn`: torchvision's Mask R-CNN with PointSup's point loss; `sparseinst`: SparseInst;
`adamixer`: AdaMixer's query-based detector with a mask head on its boxes. All read the same InstanceBank samples (masks or points) and give masks as probabilities
at the input size, so the stage, the comparison and the benchmarks treat them alike.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from pipeline.data.coco import mask_to_annotation
from pipeline.data.instances import pad_batch
from pipeline.models import adamixer as am
from pipeline.models import sparseinst as si
from pipeline.models.params import dataclass_from
from pipeline.models.backbone import build_backbone, normalize
from pipeline.models.free_mask import grey_guide
from pipeline.models.maskrcnn import anchors, build_maskrcnn
from pipeline.models.predictor import BatchPredictor
from pipeline.models.transfiner.model import TransfinerMaskRCNN, TransfinerParams
from pipeline.ops.guided_filter import guided_filter
from pipeline.supervision import build_supervision

MODELS = {"maskrcnn": "Mask R-CNN", "sparseinst": "SparseInst", "adamixer": "AdaMixer"}


class MaskRCNNStudent:
    """torchvision's Mask R-CNN; box + mask heads; PointSup's point loss under points;
    `maskrcnn.refine=transfiner`: Mask Transfiner's refiner composed on top."""

    def __init__(self, cfg, num_classes, supervision=None):
        mc, sv = cfg.maskrcnn, cfg.supervision
        self.cfg, self.supervision = cfg, supervision or build_supervision(sv)
        self.model = build_maskrcnn(
            build_backbone(cfg.backbone), num_classes, supervision=self.supervision,
            fpn_channels=mc.fpn_channels,
            mask_head_channels=mc.mask_head_channels, box_head_dim=mc.box_head_dim,
            box_batch_size_per_image=mc.rois_per_image,
            rpn_anchor_generator=anchors(mc.anchor_sizes),
            box_detections_per_img=mc.inference.max_per_image,
            box_score_thresh=mc.inference.score_threshold,
            drop_loss_iou=float(sv.get("drop_loss_iou", 0.0)))
        if str(mc.get("refine", "none")) == "transfiner":
            self.model = TransfinerMaskRCNN(self.model,
                                            TransfinerParams.from_config(mc.transfiner),
                                            mc.fpn_channels, self.supervision)

    def optimizer(self, t, params):
        """SGD as detectron2; with the refiner, its parameters at lr x `transfiner.lr_mult`."""
        params = list(params)
        refiner = getattr(self.model, "refiner", None)
        mult = float(self.cfg.maskrcnn.transfiner.get("lr_mult", 1.0)) if refiner else 1.0
        own = {id(p) for p in refiner.parameters()} if refiner else set()
        groups = [{"params": [p for p in params if id(p) not in own]},
                  {"params": [p for p in params if id(p) in own], "lr": t.lr * mult}]
        return torch.optim.SGD([g for g in groups if g["params"]], lr=t.lr, momentum=0.9,
                               weight_decay=t.weight_decay)

    def losses(self, m, samples, device) -> dict:
        images = [s["image"].to(device) / 255.0 for s in samples]
        tg = [self.supervision.sample_targets(s, device, label_offset=1) for s in samples]
        losses = m(images, tg)
        losses["loss"] = sum(losses.values())
        return losses

    def predict(self, batch, shape, c):
        """-> per image (masks (K, 1, h, w) probabilities at `shape`, scores, labels 1.., boxes)."""
        outs = self.model([x / 255.0 for x in batch])
        return [(o["masks"], o["scores"], o["labels"], o["boxes"]) for o in outs]


class SparseInstStudent:
    """SparseInst; label 0.. from its class head; boxes are its masks' extents."""

    def __init__(self, cfg, num_classes, supervision=None):
        c = cfg.sparseinst
        self.cfg, self.supervision = cfg, supervision or build_supervision(cfg.supervision)
        self.model = si.SparseInst(build_backbone(cfg.backbone), num_classes,
                                   channels=c.encoder_channels, dim=c.decoder_dim,
                                   num_queries=c.num_queries, kernel_dim=c.kernel_dim,
                                   convs=c.decoder_convs, groups=c.groups,
                                   group_fc=c.get("group_fc", "expand"))
        self.loss = instantiate(c.loss, drop_loss_iou=float(
            cfg.supervision.get("drop_loss_iou", 0.0)))
        self.params = dataclass_from(si.InferenceParams, c.inference)

    def optimizer(self, t, params):
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)  # as released

    def losses(self, m, samples, device) -> dict:
        images, _ = pad_batch(samples)
        out = m(normalize(images.to(device)))
        return self.loss(out, samples, images.shape[-2:], self.supervision, images.to(device))

    def predict(self, batch, shape, c):
        hp, wp = [-(-d // 32) * 32 for d in shape]
        x = F.pad(torch.stack(batch), (0, wp - shape[1], 0, hp - shape[0]))
        out = self.model(normalize(x))
        res = []
        for i in range(len(batch)):
            logits, scores, labels = si.sparseinst_predict(out, i, self.params)
            # stride-4 masks of the padded input -> probabilities at the input size
            prob = F.interpolate(logits.sigmoid()[None], size=(hp, wp), mode="bilinear",
                                 align_corners=False)[0, :, None, :shape[0], :shape[1]]
            res.append((prob, scores, labels + 1, None))
        return res


class AdaMixerStudent:
    """AdaMixer: N queries refined over 6 stages into boxes and classes, a mask head on the
    final boxes; full masks or PointSup's point loss for the mask head, boxes either way."""

    ARCH = ("num_queries", "dim", "feat_dim", "stages", "heads", "ffn_dim", "groups",
            "in_points", "out_points", "level_tau", "xy_unit", "mask_channels", "mask_convs",
            "roi_size")

    def __init__(self, cfg, num_classes, supervision=None):
        c = cfg.adamixer
        self.cfg, self.supervision = cfg, supervision or build_supervision(cfg.supervision)
        self.model = am.AdaMixer(
            build_backbone(cfg.backbone), num_classes, **{k: c[k] for k in self.ARCH},
            supervision=self.supervision, neck=str(c.get("neck", "none")),
            loss=instantiate(c.loss))
        self.params = dataclass_from(am.InferenceParams, c.inference)

    def optimizer(self, t, params):
        """AdamW as released; the backbone's parameters at lr x `train.backbone_lr_mult`."""
        backbone = {id(p) for p in self.model.backbone.parameters()}
        params = list(params)
        groups = [{"params": [p for p in params if id(p) not in backbone]},
                  {"params": [p for p in params if id(p) in backbone],
                   "lr": t.lr * float(t.get("backbone_lr_mult", 1.0))}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr,
                                 weight_decay=t.weight_decay)

    def losses(self, m, samples, device) -> dict:
        images, _ = pad_batch(samples)
        sizes = torch.tensor([list(s["image"].shape[1:]) for s in samples], device=device)
        targets = [self.supervision.sample_targets(s, device) for s in samples]
        return m(normalize(images.to(device)), sizes, targets)

    def predict(self, batch, shape, c):
        hp, wp = [-(-d // 32) * 32 for d in shape]
        x = F.pad(torch.stack(batch), (0, wp - shape[1], 0, hp - shape[0]))
        sizes = torch.tensor([list(shape)] * len(batch), device=x.device)
        out = self.model(normalize(x), sizes)
        res = []
        for i in range(len(batch)):
            masks, scores, labels, boxes = self.model.predict(out, i, shape, self.params)
            res.append((masks, scores, labels + 1, boxes))
        return res


def build_student(cfg, num_classes: int, name: str | None = None, supervision=None):
    """The student of config node `name` (default cfg.model), built from the class its
    `_target_` names (Hydra's convention) with (cfg, num_classes, supervision): a student of
    one's own plugs in by config, `<model>._target_=my_package.MyStudent`. `supervision`: the
    object the caller already built from cfg.supervision (else the student builds it)."""
    from hydra.utils import get_class
    return get_class(str(cfg[name or cfg.model]._target_))(cfg, num_classes, supervision)


class StudentPredictor(BatchPredictor):
    def __init__(self, student, node, device, label_to_cat):
        c = node.inference
        super().__init__(device, c.batch_size, c.short_side, c.max_size)
        self.student, self.node = student, node
        self.model = student.model.eval()
        self.label_to_cat = label_to_cat

    def forward(self, batch, shape):
        return self.student.predict(list(batch.to(self.device)), shape, self.node.inference)

    def annotations(self, info, image, shape, out):
        masks, scores, labels, boxes = out
        c = self.node.inference
        h, w = image.shape[:2]
        if len(masks) and tuple(shape) != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        radius = int(c.get("guided_radius_px", 0))
        if len(masks) and radius > 0:  # the free masks' edge snapping, at image size
            masks = guided_filter(grey_guide(image).to(masks), masks[:, 0][None], radius,
                                  float(c.get("guided_eps", 1e-3)))[0, :, None]
        masks = (masks[:, 0] >= c.mask_threshold).cpu().numpy()
        anns = []
        for k, (m, s, lab) in enumerate(zip(masks, scores.tolist(), labels.tolist())):
            if not m.any():
                continue
            a = mask_to_annotation(m, info["id"], self.label_to_cat[int(lab)],
                                   score=round(float(s), 5))
            if boxes is not None:  # box AP scores the detector's boxes, not the mask's
                sx, sy = w / shape[1], h / shape[0]
                x0, y0, x1, y1 = (boxes[k].cpu() * torch.tensor([sx, sy, sx, sy])).tolist()
                a["bbox"] = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
            anns.append(a)
        return anns


def inference_speed(predictor, split, n: int, device) -> dict:
    """Images per second of the full inference path (resize, model, masks at image size) on
    up to n images of the split, one image at a time, measured now on this machine (never
    read back from an earlier run): the speed column of the comparison."""
    from pipeline.sharded import load_images
    items, _ = load_images(split, sorted(split.images, key=lambda im: im["id"])[:n], 1, False)
    if not items:
        return {"images_per_s": None}
    predictor(items[:1])  # warm-up: first-call allocations and kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for item in items:
        predictor([item])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": round(len(items) / seconds, 2), "images": len(items),
            "split": split.name, "device": str(device),
            "threads": torch.get_num_threads()}
