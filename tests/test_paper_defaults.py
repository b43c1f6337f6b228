"""`experiment=coco_r50` resolves to the official configs' values, key by key.

Each row: the resolved key, the official value, and the file of the official code it is read
from, so a default cannot drift from the papers without this test saying which and where.
Deliberate deviations are in docs/fidelity.md, each with its switch; they are not listed here.
"""
import pytest

from tests.conftest import make_cfg

DENSECL = "WXinlong/DenseCL configs/selfsup/densecl/densecl_imagenet_200ep.py"
DENSECL_CODE = "WXinlong/DenseCL openselfsup/models/densecl.py"
SOLO_CFG = "NVlabs/FreeSOLO freesolo/config.py (SOLOv2 defaults, from AdelaiDet)"
FREESOLO = "NVlabs/FreeSOLO configs/freesolo/freesolo_30k.yaml"
SOLO_CODE = "NVlabs/FreeSOLO freesolo/modeling/solov2/solov2.py (split_feats)"
SPARSEINST = "hustvl/SparseInst sparseinst/config.py"
SPARSEINST_CODE = "hustvl/SparseInst sparseinst/{decoder,loss,sparseinst}.py"
MASKCUT = "facebookresearch/CutLER maskcut/maskcut.py"
CUTLER = "facebookresearch/CutLER cutler/model_zoo/configs/CutLER-ImageNet/" \
         "cascade_mask_rcnn_R_50_FPN.yaml"

TABLE = [
    # DenseCL pretraining
    ("pretrain.base_lr", 0.03, DENSECL),              # SGD lr 0.03 for 8 x 32 images
    ("pretrain.batch_size", 256, DENSECL),
    ("pretrain.weight_decay", 1e-4, DENSECL),
    ("pretrain.crop_size", 224, DENSECL),
    ("pretrain.crop_scale", [0.2, 1.0], DENSECL),
    ("pretrain.queue_size", 65536, DENSECL),
    ("pretrain.dim", 128, DENSECL),
    ("pretrain.hidden", 2048, DENSECL),
    ("pretrain.momentum", 0.999, DENSECL),
    ("pretrain.temperature", 0.2, DENSECL),
    ("pretrain.dense_weight", 0.5, DENSECL),          # loss_lambda
    ("pretrain.dense_queue", "pooled_projection", DENSECL_CODE),
    ("pretrain.key_bn", "own", DENSECL_CODE),         # only parameters follow the query
    # SOLOv2 as FreeSOLO configures it
    ("solo.levels.*.grid", [40, 36, 24, 16, 12], SOLO_CFG),
    ("solo.levels.*.stride", [8, 8, 16, 32, 32], SOLO_CFG),
    ("solo.levels.*.scale", [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]],
     SOLO_CFG),
    ("solo.levels.*.feature", ["p2", "p3", "p4", "p5", "p6"], SOLO_CFG),
    ("solo.loss.sigma", 0.2, SOLO_CFG),
    ("solo.fpn_channels", 256, SOLO_CFG),
    ("solo.head_channels", 512, SOLO_CFG),
    ("solo.head_convs", 4, SOLO_CFG),
    ("solo.mask_channels", 256, SOLO_CFG),            # NUM_KERNELS / NUM_MASKS
    ("solo.mask_branch_channels", 128, SOLO_CFG),
    ("solo.split_feats", True, SOLO_CODE),
    ("solo.inference.pre_nms", 500, SOLO_CFG),
    ("solo.inference.score_threshold", 0.1, SOLO_CFG),
    ("solo.inference.update_threshold", 0.05, SOLO_CFG),
    ("solo.inference.mask_threshold", 0.5, SOLO_CFG),
    ("solo.inference.max_per_image", 100, SOLO_CFG),
    ("solo.inference.nms_kernel", "gaussian", SOLO_CFG),
    ("solo.inference.nms_sigma", 2.0, SOLO_CFG),
    ("solo.loss.focal_alpha", 0.25, SOLO_CFG),
    ("solo.loss.focal_gamma", 2.0, SOLO_CFG),
    ("solo.loss.cate", 1.0, FREESOLO),                # FOCAL_WEIGHT
    ("solo.train.lr", 0.001, FREESOLO),
    ("solo.train.batch_size", 16, FREESOLO),
    ("solo.train.max_iter", 30000, FREESOLO),
    ("solo.train.warmup_iter", 1000, FREESOLO),
    ("solo.train.sizes", [640, 672, 704, 736, 768, 800], FREESOLO),
    ("solo.loss.drop_loss_iou", 0.0, FREESOLO),       # FreeSOLO has no DropLoss
    # SparseInst
    ("sparseinst.encoder_channels", 256, SPARSEINST),
    ("sparseinst.decoder_dim", 256, SPARSEINST),
    ("sparseinst.decoder_convs", 4, SPARSEINST),
    ("sparseinst.num_queries", 100, SPARSEINST),
    ("sparseinst.groups", 4, SPARSEINST),
    ("sparseinst.kernel_dim", 128, SPARSEINST),
    ("sparseinst.loss.cls", 2.0, SPARSEINST),
    ("sparseinst.loss.bce", 5.0, SPARSEINST),
    ("sparseinst.loss.dice", 2.0, SPARSEINST),
    ("sparseinst.loss.objectness", 1.0, SPARSEINST),
    ("sparseinst.loss.match_alpha", 0.8, SPARSEINST),
    ("sparseinst.loss.focal_alpha", 0.25, SPARSEINST_CODE),
    ("sparseinst.loss.focal_gamma", 2.0, SPARSEINST_CODE),
    ("sparseinst.inference.score_threshold", 0.005, SPARSEINST),
    ("sparseinst.inference.mask_threshold", 0.45, SPARSEINST),
    ("sparseinst.inference.max_per_image", 100, SPARSEINST),
    ("sparseinst.group_fc", "expand", SPARSEINST_CODE),   # Linear(4*dim, 4*dim)
    ("sparseinst.loss.match_dice", "squared", SPARSEINST_CODE),
    ("sparseinst.loss.objectness_threshold", 0.4, SPARSEINST_CODE),
    ("sparseinst.inference.rescore", "maskness", SPARSEINST_CODE),
    # MaskCut
    ("freemask.maskcut.max_objects", 3, MASKCUT),     # --N 3
    ("freemask.maskcut.eps", 1e-5, MASKCUT),
    ("freemask.maskcut.graph", "zero", MASKCUT),
    ("freemask.maskcut.corner_rule", "first", MASKCUT),
    ("freemask.maskcut.all_components", False, MASKCUT),
    ("freemask.maskcut.max_area_frac", 1.0, MASKCUT),  # no area filter
    # CutLER's DropLoss for students trained on pseudo-labels
    ("supervision.drop_loss_iou", 0.01, CUTLER),
]


def resolve(cfg, key):
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part == "*":
            rest = ".".join(parts[i + 1:])
            return [resolve(item, rest) for item in node]
        node = node[part]
    from omegaconf import OmegaConf
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_cfg(tmp_path_factory.mktemp("coco"), "experiment=coco_r50",
                    "supervision=solo")


@pytest.mark.parametrize("key,official,source", TABLE, ids=[k for k, _, _ in TABLE])
def test_coco_r50_has_the_official_value(coco, key, official, source):
    value = resolve(coco, key)
    if isinstance(official, float):
        assert value == pytest.approx(official), f"{key}: {value} != {official} ({source})"
    else:
        assert value == official, f"{key}: {value} != {official} ({source})"


def test_every_row_cites_a_source_file():
    assert all("/" in src and "." in src for _, _, src in TABLE)
