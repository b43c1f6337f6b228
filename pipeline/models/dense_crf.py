"""Dense-CRF post-processing of MaskCut's masks (CutLER, Wang et al., CVPR 2023, Sec. 3.1).

Each mask, at image size, becomes the unary of a two-label fully connected CRF (Krähenbühl &
Koltun, NeurIPS 2011) with a Gaussian smoothness kernel and a bilateral appearance kernel on
the RGB image; the MAP labelling after mean-field inference, holes filled, replaces the mask,
and a mask the CRF changes too much (IoU(before, after) < 0.5) is dropped. The kernel
settings are those of CutLER's released maskcut/crf.py. The CRF itself comes from the
optional package `pydensecrf2` (`pip install -e '.[crf]'`; it builds from source with a C++
compiler); without it `freemask.maskcut.crf=true` stops with a one-line error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import UserError


@dataclass(frozen=True)
class CRFParams:
    iterations: int = 10        # mean-field steps
    pos_weight: float = 7.0     # Gaussian (smoothness) kernel: compatibility weight
    pos_xy_std: float = 3.0     # and spatial std, pixels
    bi_weight: float = 10.0     # bilateral (appearance) kernel: compatibility weight
    bi_xy_std: float = 50.0     # spatial std, pixels
    bi_rgb_std: float = 5.0     # colour std, RGB units
    min_iou: float = 0.5        # masks the CRF moves further than this are dropped


def require_crf():
    """The pydensecrf module, or one line telling the user how to get it or turn it off."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise UserError("freemask.maskcut.crf=true needs the optional package pydensecrf2: "
                        "pip install -e '.[crf]' (needs a C++ compiler), or set "
                        "freemask.maskcut.crf=false") from None
    return dcrf


def crf_mask(image: np.ndarray, mask: np.ndarray, p: CRFParams = CRFParams()) -> np.ndarray:
    """(H, W, 3) uint8 RGB image, (H, W) bool mask -> (H, W) bool MAP foreground after the
    dense CRF, holes filled. The unary is -log of the softmax of the (background,
    foreground) indicator pair, as the released code feeds it."""
    dcrf = require_crf()
    h, w = mask.shape
    fg = mask.astype(np.float32)
    logits = np.stack([1 - fg, fg])
    prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    unary = np.ascontiguousarray(-np.log(prob).reshape(2, -1), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=p.pos_xy_std, compat=p.pos_weight)
    crf.addPairwiseBilateral(sxy=p.bi_xy_std, srgb=p.bi_rgb_std,
                             rgbim=np.array(image, dtype=np.uint8, order="C"),  # a copy:
                             # pydensecrf needs a writable buffer
                             compat=p.bi_weight)
    q = np.array(crf.inference(p.iterations)).reshape(2, h, w)
    return ndi.binary_fill_holes(q.argmax(0) == 1)


def crf_refine(image: np.ndarray, masks: np.ndarray, p: CRFParams = CRFParams()):
    """(H, W, 3) uint8 image, (K, H, W) bool masks -> (refined (K, H, W) bool, keep (K,)
    bool): keep is False where IoU(mask, refined) < p.min_iou (the released check)."""
    refined = np.zeros_like(masks, dtype=bool)
    keep = np.zeros(len(masks), dtype=bool)
    for k, m in enumerate(masks):
        r = crf_mask(image, m, p)
        union = (m | r).sum()
        refined[k] = r
        keep[k] = union > 0 and (m & r).sum() / union >= p.min_iou
    return refined, keep
