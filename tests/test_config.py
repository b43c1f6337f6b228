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
    assert coco.freemask.short_side == 800 and coco.freemask.top_k == 20
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
