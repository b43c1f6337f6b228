"""The one CLI: `python -m pipeline stage=<name> [overrides]` (Hydra)."""
from __future__ import annotations

import importlib
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.errors import UserError
from pipeline.stages import STAGES

log = logging.getLogger("pipeline")


def run_stage(cfg: DictConfig):
    """Run `cfg.stage` with a composed config (also what tests call)."""
    if cfg.stage not in STAGES:
        raise UserError(f"stage={cfg.stage!r} is not a stage; choose one of {', '.join(STAGES)}")
    if os.environ.get("CI") == "true":
        with open_dict(cfg):
            cfg.progress = False
    import torch
    torch.set_num_threads(int(cfg.hardware.threads) or torch.get_num_threads())
    module = importlib.import_module(f"pipeline.stages.{cfg.stage}")
    return module.run(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    with open_dict(cfg):
        cfg.run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        return run_stage(cfg)
    except UserError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
