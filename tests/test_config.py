"""Every config group composes, and the experiment presets say what they claim."""
from pathlib import Path

import pytest

from tests.conftest import CONF, make_cfg

GROUPS = ["dataset", "backbone", "freemask", "baseline", "hardware", "experiment", "pretrain",
          "solo", "maskrcnn", "supervision", "compare", "report", "paths", "points",
          "annotation"]


@pytest.mark.parametrize("group,option", [
    (g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_composes(tmp_path, group, option):
    cfg = make_cfg(tmp_path, f"{group}={option}", "dataset.images=/x" if option == "folder"
                   else "seed=0")
    assert cfg[group] is not None if group != "experiment" else cfg.experiment_name


def test_cpu_default_and_coco_preset(tmp_path):
    cpu = make_cfg(tmp_path)
    assert cpu.experiment_name == "cpu_sample" and cpu.backbone.arch == "resnet18"
    assert cpu.hardware.device == "cpu" and cpu.dataset.kind == "sample"
    coco = make_cfg(tmp_path, "experiment=coco_r50")
    assert coco.backbone.arch == "resnet50" and coco.hardware.device == "cuda"
    assert coco.freemask.short_side == 800 and coco.freemask.freesolo.top_k == 20
    assert Path(coco.dataset.splits.val.json).name == "instances_val2017.json"


@pytest.mark.parametrize("launcher", ["basic", "joblib", "slurm_gpu", "local_processes"])
def test_launchers_compose(tmp_path, launcher):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra")
    if launcher == "slurm_gpu":
        assert cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.parametrize("experiment", ["cpu_sample", "coco_r50"])
@pytest.mark.parametrize("model", ["maskrcnn", "sparseinst", "adamixer"])
@pytest.mark.parametrize("supervision", ["full", "points"])
def test_every_student_node_instantiates_from_its_target(tmp_path, experiment, model,
                                                         supervision):
    """Each student's config node names its class (`_target_`); the object built from each
    experiment and supervision computes a finite loss on a batch (what a typo'd key or a
    broken _target_ would not)."""
    import torch
    from pipeline.models.students import MODELS, build_student
    cfg = make_cfg(tmp_path, f"experiment={experiment}", f"model={model}",
                   f"supervision={supervision}", "backbone.weights=null", "backbone.arch=resnet18",
                   "hardware.device=cpu")
    student = build_student(cfg, 2)
    assert type(student).__name__ == str(cfg[model]._target_).rsplit(".", 1)[1]
    assert model in MODELS
    torch.manual_seed(0)
    image = torch.zeros(3, 64, 64)
    image[:, 16:40, 20:44] = 200.0
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 16:40, 20:44] = True
    sample = {"image": image, "boxes": torch.tensor([[20.0, 16.0, 44.0, 40.0]]),
              "labels": torch.tensor([1]), "masks": mask,
              "points": torch.tensor([[[30.0, 28.0], [5.0, 5.0]]]),
              "point_labels": torch.tensor([[1, 0]])}
    student.model.train()
    losses = student.losses(student.model, [sample], torch.device("cpu"))
    assert torch.isfinite(losses["loss"])


@pytest.mark.parametrize("experiment", ["cpu_sample", "coco_r50"])
def test_every_baseline_option_instantiates_and_proposes_masks(tmp_path, experiment):
    import numpy as np
    from pipeline.stages.baseline import method_of
    cfg = make_cfg(tmp_path, f"experiment={experiment}")
    image = np.full((48, 48, 3), 30, np.uint8)
    image[10:30, 12:34] = 220
    for name in cfg.baseline.options:
        proposals = method_of(cfg.baseline, name)(image)
        assert proposals and all(m.shape == (48, 48) for m, _ in proposals), name


def test_a_baseline_without_a_target_is_refused_in_one_line(tmp_path):
    from pipeline.errors import UserError
    from pipeline.stages.baseline import method_of
    cfg = make_cfg(tmp_path)
    with pytest.raises(UserError, match="baseline.methods names 'nope'"):
        method_of(cfg.baseline, "nope")


@pytest.mark.parametrize("experiment", ["cpu_sample", "coco_r50"])
@pytest.mark.parametrize("method", ["freesolo", "maskcut"])
def test_every_free_mask_method_instantiates_and_finds_a_planted_object(tmp_path, experiment,
                                                                        method):
    """Each free-mask method node names its class (`_target_`); the object built from each
    experiment turns a feature map with one planted block into at least one mask on it."""
    import torch
    from pipeline.models.free_mask_predictor import build_method
    cfg = make_cfg(tmp_path, f"experiment={experiment}", f"freemask.method={method}",
                   f"freemask.{method}.{'min_maskness' if method == 'freesolo' else 'min_score'}=0")
    masks = build_method(cfg.freemask)
    assert type(masks).__name__ == str(cfg.freemask[method]._target_).rsplit(".", 1)[1]
    torch.manual_seed(0)
    feat = torch.zeros(1, 8, 12, 12)            # object and background features orthogonal
    feat[0, 4:] = 1.0
    feat[0, :4, 3:8, 4:9], feat[0, 4:, 3:8, 4:9] = 1.0, 0.0
    feat += torch.rand(1, 8, 12, 12) * 0.05
    batch = torch.full((1, 3, 48, 48), 40.0)
    batch[0, :, 12:32, 16:36] = 220.0
    (soft, extras), = list(masks(feat, batch))
    assert len(extras) == len(soft) > 0
    planted = torch.zeros(12, 12, dtype=torch.bool)
    planted[3:8, 4:9] = True
    hits = [((s >= 0.5) & planted).sum() / ((s >= 0.5) | planted).sum() for s in soft]
    assert max(hits) > 0.5


def test_an_unknown_free_mask_method_is_refused_in_one_line(tmp_path):
    from pipeline.config_checks import check
    from pipeline.errors import UserError
    cfg = make_cfg(tmp_path, "freemask.method=nope")
    with pytest.raises(UserError, match="freemask.method='nope' names no node"):
        check(cfg)


@pytest.mark.parametrize("overrides", [["experiment=cpu_sample"], ["experiment=coco_r50"],
                                       ["solo=full_masks"]])
def test_every_loss_node_instantiates_with_its_weights(tmp_path, overrides):
    """`solo.loss`, `sparseinst.loss` and `adamixer.loss` name their loss class (`_target_`);
    the object carries every weight the node sets (a key the class lacks fails here)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    cfg = make_cfg(tmp_path, *overrides)
    for node in (cfg.solo.loss, cfg.sparseinst.loss, cfg.adamixer.loss):
        loss = instantiate(node)
        assert callable(loss)
        for key, value in OmegaConf.to_container(node).items():
            if key != "_target_":
                assert getattr(loss, key) == value, key
