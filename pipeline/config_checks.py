"""Settings checked against their valid range before any work: one line naming the setting,
its value and what it may be. One table, not checks scattered through the stages.

The table covers every numeric and boolean setting (tests/test_config.py composes the configs
and fails on one it does not cover); a key may be a pattern (`*.train.ckpt_every`). A null
is refused unless the key is in NULLABLE; booleans are only true or false (Hydra parses those;
`strict=no` stays a string and is refused, where Python would read it as true).
"""
from __future__ import annotations

import fnmatch
import numbers

from omegaconf import ListConfig, OmegaConf

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


def _bool():
    return (lambda v: isinstance(v, bool)), "true or false"


def _port():
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535,
            "a port number from 1 to 65535")


def _list_of(rule, n=None):
    ok1, text = rule

    def ok(v):
        if not isinstance(v, (list, tuple, ListConfig)) or not len(v) or \
                (n is not None and len(v) != n):
            return False
        return all(ok1(x) for x in v)
    return ok, (f"a list of {n} values, each " if n else "a non-empty list, each ") + text


def _pair_range(rule):
    ok1, text = rule

    def ok(v):
        return _list_of(rule, 2)[0](v) and v[0] <= v[1]
    return ok, f"a pair [lo, hi] with lo <= hi, each {text}"


def _levels():
    def ok(v):
        try:
            return len(v) > 0 and all(
                COUNT[0](lv["grid"]) and COUNT[0](lv["stride"]) and
                _pair_range(_num(0))[0](lv["scale"]) and isinstance(lv["feature"], str)
                for lv in v)
        except (KeyError, TypeError):
            return False
    return ok, "a list of {feature, grid >= 1, stride >= 1, scale: [lo, hi]}"


def _zoom_range():
    def ok(v):
        try:
            lo, hi = (float(x) for x in v)
        except (TypeError, ValueError):
            return False
        return 0 < lo <= hi
    return ok, "a pair [lo, hi] of zoom factors with 0 < lo <= hi"


def _quadtree_sizes():
    def ok(v):
        try:
            v = [int(x) for x in v]
        except (TypeError, ValueError):
            return False
        return len(v) >= 1 and v[0] >= 2 and all(b == 2 * a for a, b in zip(v, v[1:]))
    return ok, "a list of grid sizes, each twice the previous (e.g. [28, 56, 112])"


def _one_of(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


COUNT, SIZE, FRACTION, POSITIVE = _int(1), _int(0), _num(0, 1), _num(0, lo_open=True)
BOOL, WEIGHT = _bool(), _num(0)
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
                          "adamixer.out_points", "adamixer.heads", "adamixer.roi_size",
                          "adamixer.dim", "adamixer.feat_dim", "adamixer.ffn_dim",
                          "adamixer.mask_channels", "adamixer.mask_convs")},
    **{k: SIZE for k in ("hardware.workers", "hardware.loader_workers", "solo.train.max_iter",
                         "maskrcnn.train.max_iter",
                         "pretrain.max_iter", "overlays", "freemask.border_pad",
                         "freemask.freesolo.top_k", "solo.inference.max_per_image",
                         "maskrcnn.inference.max_per_image", "solo.self_training.max_per_image")},
    # what is counted
    "solo.rounds": COUNT, "points.n": COUNT, "points.versions": COUNT,
    "annotation.points_per_box": COUNT, "annotation.min_score": _num(0),
    "annotation.best_min_points": SIZE, "annotation.best_min_images": SIZE,
    "annotation.assistant.retrain_every": SIZE,
    "annotation.assistant.train_iter": COUNT,
    "baseline.options.colour_components.k": _int(2),
    "freemask.maskcut.max_objects": COUNT,
    # choices
    "freemask.feature_level": _one_of("res2", "res3", "res4", "res5"),
    "freemask.freesolo.filter_score": _one_of("decayed", "raw"),
    "solo.self_training.init": _one_of("previous", "backbone"),
    "solo.train.optimizer": _one_of("sgd", "adamw"),
    "pretrain.augment": _one_of("batch", "per_image"),
    "annotation.queue": _one_of("uncertainty", "sequential", "uniform"),
    "annotation.assistant.placement": _one_of("uncertain", "uniform"),
    "annotation.assistant.model": _one_of("maskrcnn", "adamixer"),
    "model": _one_of("maskrcnn", "sparseinst", "adamixer"),
    "maskrcnn.refine": _one_of("none", "transfiner"),
    "adamixer.neck": _one_of("none", "fpn"),
    "maskrcnn.transfiner.sizes": _quadtree_sizes(),
    **{k: COUNT for k in ("maskrcnn.transfiner.dim", "maskrcnn.transfiner.layers",
                          "maskrcnn.transfiner.heads", "maskrcnn.transfiner.detector_width")},
    **{k: SIZE for k in ("maskrcnn.transfiner.max_nodes", "maskrcnn.transfiner.train_rois",
                         "maskrcnn.transfiner.dilate")},
    **{k: FRACTION for k in ("maskrcnn.transfiner.threshold", "maskrcnn.transfiner.min_score")},
    **{k: BOOL for k in ("maskrcnn.transfiner.pixels", "maskrcnn.transfiner.detect_balanced",
                         "maskrcnn.transfiner.residual", "maskrcnn.transfiner.contrast")},
    "maskrcnn.transfiner.select": _one_of("threshold", "expected"),
    "maskrcnn.transfiner.train_nodes": _one_of("targets", "detected"),
    "maskrcnn.transfiner.node_labels": _one_of("majority", "fraction"),
    **{k: _one_of(True, False, "auto") for k in ("hardware.amp", "pretrain.amp",
                                                  "solo.train.amp", "maskrcnn.train.amp",
                                                  "sparseinst.train.amp", "adamixer.train.amp")},
    # thresholds and fractions
    **{k: FRACTION for k in ("freemask.mask_threshold", "freemask.freesolo.min_maskness",
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
                             "adamixer.train.backbone_lr_mult", "maskrcnn.transfiner.lr_mult",
                             "pretrain.base_lr",
                             "freemask.short_side", "freemask.max_size",
                             "solo.inference.short_side", "maskrcnn.inference.short_side")},
    "choose.min_score.*": FRACTION,   # per source: masks scored lower are left out
    **{f"report.warn.{k}": FRACTION for k in ("confident", "border", "coverage",
                                               "regions", "agreement")},
    "freemask.guided_radius": _num(0),
    **{k: _num(0, 0.9999) for k in ("solo.train.ema", "maskrcnn.train.ema",
                                     "sparseinst.train.ema", "adamixer.train.ema")},
    "solo.self_training.iter_fraction": _num(0, 1, lo_open=True),
    **{k: _zoom_range() for k in ("solo.train.scale_jitter", "maskrcnn.train.scale_jitter",
                                   "sparseinst.train.scale_jitter", "adamixer.train.scale_jitter")},
    "solo.inference.guided_radius": _num(0),
    # the papers' choices and their switches (docs/fidelity.md)
    "pretrain.dense_queue": _one_of("pooled_projection", "pooled_normalised"),
    "pretrain.key_bn": _one_of("own", "copy"),
    "sparseinst.group_fc": _one_of("expand", "project"),
    "sparseinst.loss.match_dice": _one_of("squared", "plain"),
    "sparseinst.inference.rescore": _one_of("maskness", "none"),
    "freemask.maskcut.graph": _one_of("zero", "remove"),
    "freemask.maskcut.corner_rule": _one_of("first", "after_seed"),
    **{k: FRACTION for k in ("sparseinst.loss.objectness_threshold", "solo.loss.drop_loss_iou",
                             "supervision.drop_loss_iou", "freemask.maskcut.max_area_frac",
                             "freemask.maskcut.crf_min_iou")},
    **{k: SIZE for k in ("maskrcnn.inference.guided_radius_px",
                         "sparseinst.inference.guided_radius_px",
                         "adamixer.inference.guided_radius_px")},
    # switches
    **{k: BOOL for k in ("strict", "progress", "hardware.deterministic", "*.cache_images",
                         "annotation.assistant.enabled", "annotation.assistant.mask_overlay",
                         "annotation.start_server", "freemask.maskcut.all_components",
                         "annotation.best_threshold",
                         "freemask.maskcut.centre", "freemask.save_embedding",
                         "pretrain.overwrite", "solo.embedding.enabled",
                         "solo.inference.largest_component", "solo.inference.point_nms",
                         "solo.letterbox", "solo.loss.level_mean", "solo.train.strong_view",
                         "supervision.agnostic", "freemask.maskcut.crf", "solo.split_feats")},
    # seeds, ports, counts and sizes
    **{k: SIZE for k in ("seed", "*.seed", "supervision.point_seed", "solo.point_seed",
                         "solo.points", "hardware.threads",
                         "dataset.generate.min_visible_area", "dataset.generate.num.*",
                         "annotation.assistant.retrain_every", "freemask.maskcut.max_cuts",
                         "freemask.freesolo.min_area", "freemask.freesolo.pre_nms_topk", "*.warmup_iter",
                         "pretrain.max_side", "solo.inference.pre_nms",
                         "solo.loss.pairwise_ignore_bottom", "solo.loss.pairwise_warmup",
                         "sparseinst.inference.max_per_image", "sparseinst.train.max_iter",
                         "adamixer.inference.max_per_image", "adamixer.train.max_iter",
                         "*.speed_images", "supervision.sample_points")},
    **{k: COUNT for k in ("*.ckpt_every", "*.log_every", "*.max_size", "max_image_pixels",
                          "annotation.assistant.retrain_iter", "dataset.generate.size",
                          "baseline.options.colour_components.iters",
                          "baseline.options.colour_components.work_size",
                          "freemask.embedding_dim", "freemask.maskcut.min_cells",
                          "maskrcnn.box_head_dim", "maskrcnn.fpn_channels",
                          "maskrcnn.mask_head_channels", "maskrcnn.rois_per_image",
                          "pretrain.crop_size", "pretrain.dim", "pretrain.hidden",
                          "pretrain.queue_size", "pretrain.shuffle_groups",
                          "solo.embedding.dim", "solo.fpn_channels", "solo.head_channels",
                          "solo.head_convs", "solo.mask_branch_channels", "solo.mask_channels",
                          "solo.num_classes", "solo.loss.pairwise_dilation",
                          "solo.loss.pairwise_kernel", "sparseinst.decoder_convs",
                          "sparseinst.decoder_dim", "sparseinst.encoder_channels",
                          "sparseinst.kernel_dim", "supervision.points",
                          "points_per_instance")},
    **{k: _port() for k in ("annotation.port", "annotation.assistant.port")},
    **{k: _list_of(COUNT) for k in ("*.train.sizes", "maskrcnn.anchor_sizes")},
    "*.train.keep_checkpoints": ((lambda v: isinstance(v, (list, tuple, ListConfig)) and
                                  all(COUNT[0](x) for x in v)),
                                 "a list of iterations (may be empty)"),
    **{k: _pair_range(COUNT) for k in ("dataset.generate.object_size",
                                       "dataset.generate.objects")},
    "pretrain.crop_scale": _pair_range(_num(0, 1, lo_open=True)),
    "freemask.freesolo.query_scales": _list_of(POSITIVE),
    "solo.levels": _levels(),
    # weights, scales and thresholds
    **{k: FRACTION for k in ("annotation.assistant.score_threshold",
                             "baseline.options.watershed.min_distance_frac",
                             "freemask.maskcut.max_area_frac", "freemask.maskcut.min_score",
                             "freemask.maskcut.tau", "pretrain.dense_weight",
                             "pretrain.momentum", "*.focal_alpha", "*.pairwise_threshold",
                             "solo.train.copy_paste", "report.warn.*")},
    **{k: POSITIVE for k in ("*.guided_eps", "freemask.maskcut.colour_sigma",
                             "freemask.maskcut.eps", "freemask.maskcut.position_sigma",
                             "*.nms_sigma", "pretrain.temperature", "solo.loss.pairwise_theta",
                             "solo.loss.sigma", "sparseinst.inference.short_side",
                             "adamixer.inference.short_side", "adamixer.xy_unit")},
    **{k: WEIGHT for k in ("compare.cost.*", "baseline.options.*.local_block",
                           "freemask.maskcut.colour_weight", "freemask.maskcut.feature_weight",
                           "*.grad_clip", "*.weight_decay", "solo.embedding.weight",
                           "solo.loss.cate", "solo.loss.dice", "solo.loss.pairwise",
                           "solo.loss.proj_max", "solo.loss.proj_mean", "solo.loss.points",
                           "*.focal_gamma",
                           "sparseinst.loss.*", "maskrcnn.transfiner.loss.*", "adamixer.loss.*")},
}
# null means something for these (hardware.amp's value, no extra branch); other settings
# may not be null
NULLABLE = ("*.train.amp", "pretrain.amp", "solo.mask_branch_channels")


def _keys(cfg) -> list[str]:
    """Every leaf key of the config (dotted), lists of numbers and of levels as one leaf."""
    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)
    out = []

    def walk(x, pre):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{pre}.{k}" if pre else str(k))
        else:
            out.append(pre)
    walk(data, "")
    return out


def rule_for(key: str):
    """The (check, text) for a dotted key: an exact entry first, then the first pattern; a
    `_target_` names a class, not a setting."""
    if key.endswith("._target_"):
        return None
    if key in RULES:
        return RULES[key]
    for pattern, rule in RULES.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


def _show(value):
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return "null" if value is None else repr(value)


def check(cfg) -> None:
    """Raise one UserError for the first setting of the wrong type or outside its range."""
    for key in _keys(cfg):
        rule = rule_for(key)
        if rule is None:
            continue
        ok, text = rule
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve
            continue
        if value is None:
            if any(fnmatch.fnmatchcase(key, p) for p in NULLABLE):
                continue
            raise UserError(f"{key}=null is not allowed: it must be {text}")
        if not ok(value):
            raise UserError(f"{key}={_show(value)} is out of range: it must be {text}")
    sv = cfg.get("supervision")
    if sv is not None and "points" in sv and not COUNT[0](sv.get("points")):
        raise UserError(f"supervision.points={sv.get('points')!r} is out of range: it must be "
                        f"{COUNT[1]}")
    fm = cfg.get("freemask")
    if fm is not None and "method" in fm:
        free_mask_method(fm)


def free_mask_method(fm):
    """The freemask node `freemask.method` names (its `_target_` builds the method), or one
    UserError saying what it may be."""
    node = fm.get(fm.method) if isinstance(fm.method, str) else None
    if not (hasattr(node, "get") and node.get("_target_")):
        raise UserError(f"freemask.method={fm.method!r} names no node with a _target_ under "
                        "freemask: use freesolo or maskcut (conf/freemask/default.yaml)")
    return node
