"""The one CLI: `python -m pipeline stage=<name> [overrides]` (Hydra)."""
from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.config_checks import check as check_settings
from pipeline.errors import UserError, describe
from pipeline.io import write_text
from pipeline.lock import FolderInUse, folder_lock
from pipeline.stages import MODULES, STAGES

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
    if cfg.hardware.get("deterministic", False):
        # GPU results that do not depend on the batch: no TF32, no autotuned cuDNN algorithm
        # (picked per input shape, so per batch size), deterministic kernels where they exist
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    check_settings(cfg)
    module = importlib.import_module(f"pipeline.stages.{MODULES.get(cfg.stage, cfg.stage)}")
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the folder for all ranks
        return module.run(cfg)
    with folder_lock(cfg.run_dir):
        # written under the lock: Hydra's .hydra/config.yaml is rewritten by any run that
        # starts in this folder, even one refused at once
        run_dir = Path(cfg.run_dir)
        (run_dir / "error.txt").unlink(missing_ok=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        return module.run(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.run_dir = hc.runtime.output_dir
    run_dir = Path(cfg.run_dir)
    # a finished sweep job is run again, never skipped on its folder name: its stages reuse
    # only weights and shards whose fingerprints match this job's inputs
    sweep = hc.mode == RunMode.MULTIRUN
    try:
        result = run_stage(cfg)
    except Exception as e:
        # a failed sweep job leaves its reason where the comparison table will find it
        if not isinstance(e, FolderInUse):  # that folder is another run's
            write_text(run_dir / "error.txt", describe(e) + "\n")
        if sweep:
            raise
        if isinstance(e, UserError):
            log.error("%s", e)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    return result


if __name__ == "__main__":
    main()
