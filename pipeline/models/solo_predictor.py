"""SOLOv2 inference over (info, image) lists, as COCO annotations at each image's own size."""
from __future__ import annotations

import torch.nn.functional as F

from pipeline.data.coco import mask_to_annotation
from pipeline.data.instances import pad_square
from pipeline.models.backbone import normalize
from pipeline.models.free_mask import grey_guide, upsample_masks
from pipeline.models.params import dataclass_from
from pipeline.models.predictor import BatchPredictor
from pipeline.models.solo import InferenceParams, SOLOv2, solo_predict
from pipeline.ops.components import largest_component


class SoloPredictor(BatchPredictor):
    """SOLO inference over (info, image) lists, as COCO annotations at the original size."""

    def __init__(self, model: SOLOv2, cfg, device):
        c = cfg.inference
        # letterbox: the longer side to short_side, the canvas a square of that size
        super().__init__(device, c.batch_size, c.short_side,
                         c.short_side if cfg.letterbox else c.max_size)
        self.model, self.cfg = model.eval(), cfg
        self.params = dataclass_from(InferenceParams, c)

    def forward(self, batch, shape):
        if self.cfg.letterbox:
            batch = pad_square(batch)
        else:
            hp, wp = [-(-d // 32) * 32 for d in shape]
            batch = F.pad(batch, (0, wp - shape[1], 0, hp - shape[0]))
        out = self.model(normalize(batch.to(self.device)))
        return (solo_predict(self.model, out, i, self.params) for i in range(len(batch)))

    def annotations(self, info, image, input_hw, out):
        soft, score, label = out
        if len(soft) == 0:
            return []
        c = self.cfg.inference
        radius = float(c.get("guided_radius", 0.0))
        guide = grey_guide(image) if radius > 0 else None
        # mask features are at stride 4 of the padded input (SOLOv2's unified mask branch)
        masks = upsample_masks(soft[None], 4, input_hw, image.shape[:2],
                               self.params.mask_threshold, guide, radius,
                               float(c.get("guided_eps", 1e-2)))[0].cpu().numpy()
        one_piece = bool(c.get("largest_component", False))
        anns = []
        for m, s, lab in zip(masks, score.tolist(), label.tolist()):
            if one_piece:
                m = largest_component(m)
            if m.any():
                anns.append(mask_to_annotation(m, info["id"], int(lab) + 1, score=round(s, 5)))
        return anns
