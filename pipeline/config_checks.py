"""Settings checked against their valid range before any work: one line naming the setting,
its value and what it may be. One table, not checks scattered through the stages."""
from __future__ import annotations

import numbers

from omegaconf import OmegaConf

from pipeline.errors import UserError


def _int(lo):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
            f"an integer >= {lo}")


def _num(lo, hi=None, lo_open=False):
    def ok(v):
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            return False
        return (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    text = f"a number {'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None
                                                          else "")
    return ok, text


def _zoom_range():
    def ok(v):
        try:
            lo, hi = (float(x) for x in v)
        except (TypeError, ValueError):
            return False
        return 0 < lo <= hi
    return ok, "a pair [lo, hi] of zoom factors with 0 < lo <= hi"


def _one_of(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


COUNT, SIZE, FRACTION, POSITIVE = _int(1), _int(0), _num(0, 1), _num(0, lo_open=True)
RULES = {
    # batching and sharding
    **{k: COUNT for k in ("freemask.batch_size", "freemask.shard_size", "baseline.shard_size",
                          "solo.inference.batch_size", "solo.inference.shard_size",
                          "solo.train.batch_size", "maskrcnn.train.batch_size",
                          "maskrcnn.inference.batch_size", "maskrcnn.inference.shard_size",
                          "sparseinst.train.batch_size", "sparseinst.inference.batch_size",
                          "sparseinst.inference.shard_size", "sparseinst.num_queries",
                          "sparseinst.groups", "pretrain.batch_size",
                          "adamixer.train.batch_size", "adamixer.inference.batch_size",
                          "adamixer.inference.shard_size", "adamixer.num_queries",
                          "adamixer.stages", "adamixer.groups", "adamixer.in_points",
                          "adamixer.out_points", "adamixer.heads", "adamixer.roi_size")},
    **{k: SIZE for k in ("hardware.workers", "hardware.loader_workers", "solo.train.max_iter",
                         "maskrcnn.train.max_iter",
                         "pretrain.max_iter", "overlays", "freemask.border_pad",
                         "freemask.top_k", "solo.inference.max_per_image",
                         "maskrcnn.inference.max_per_image", "solo.self_training.max_per_image")},
    # what is counted
    "solo.rounds": COUNT, "points.n": COUNT, "points.versions": COUNT,
    "annotation.points_per_box": COUNT, "annotation.min_score": _num(0),
    "baseline.options.colour_components.k": _int(2),
    "freemask.maskcut.max_objects": COUNT,
    # choices
    "freemask.method": _one_of("freesolo", "maskcut"),
    "freemask.feature_level": _one_of("res2", "res3", "res4", "res5"),
    "freemask.filter_score": _one_of("decayed", "raw"),
    "solo.self_training.init": _one_of("previous", "backbone"),
    "solo.train.optimizer": _one_of("sgd", "adamw"),
    "pretrain.augment": _one_of("batch", "per_image"),
    "annotation.queue": _one_of("uncertainty", "sequential", "uniform"),
    "model": _one_of("maskrcnn", "sparseinst", "adamixer"),
    **{k: _one_of(True, False, "auto") for k in ("hardware.amp", "pretrain.amp",
                                                  "solo.train.amp", "maskrcnn.train.amp",
                                                  "sparseinst.train.amp", "adamixer.train.amp")},
    # thresholds and fractions
    **{k: FRACTION for k in ("freemask.mask_threshold", "freemask.min_maskness",
                             "freemask.max_box_width_frac", "freemask.min_center_y_frac",
                             "freemask.border_band_frac", "freemask.max_border_frac",
                             "solo.inference.score_threshold", "solo.inference.mask_threshold",
                             "solo.inference.update_threshold",
                             "solo.self_training.score_threshold", "solo.targets_min_score",
                             "solo.self_training.keep_previous_iou",
                             "solo.self_training.max_box_width_frac",
                             "maskrcnn.inference.score_threshold",
                             "maskrcnn.inference.mask_threshold",
                             "sparseinst.inference.score_threshold",
                             "sparseinst.inference.mask_threshold",
                             "sparseinst.loss.match_alpha",
                             "adamixer.inference.score_threshold",
                             "adamixer.inference.mask_threshold")},
    **{k: POSITIVE for k in ("solo.train.lr", "maskrcnn.train.lr", "sparseinst.train.lr",
                             "adamixer.train.lr", "adamixer.level_tau",
                             "pretrain.base_lr",
                             "freemask.short_side", "freemask.max_size",
                             "solo.inference.short_side", "maskrcnn.inference.short_side")},
    "freemask.guided_radius": _num(0),
    **{k: _num(0, 0.9999) for k in ("solo.train.ema", "maskrcnn.train.ema",
                                     "sparseinst.train.ema", "adamixer.train.ema")},
    "solo.self_training.iter_fraction": _num(0, 1, lo_open=True),
    **{k: _zoom_range() for k in ("solo.train.scale_jitter", "maskrcnn.train.scale_jitter",
                                   "sparseinst.train.scale_jitter", "adamixer.train.scale_jitter")},
    "solo.inference.guided_radius": _num(0),
    **{k: SIZE for k in ("maskrcnn.inference.guided_radius_px",
                         "sparseinst.inference.guided_radius_px",
                         "adamixer.inference.guided_radius_px")},
}


def check(cfg) -> None:
    """Raise one UserError for the first setting outside its valid range."""
    for key, (ok, text) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None and not ok(value):
            raise UserError(f"{key}={value!r} is out of range: it must be {text}")
    sv = cfg.get("supervision")
    if sv is not None and sv.get("mask_loss") == "points" and not COUNT[0](sv.get("points")):
        raise UserError(f"supervision.points={sv.get('points')!r} is out of range: it must be "
                        f"{COUNT[1]}")
