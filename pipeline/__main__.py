"""The one CLI: `python -m pipeline stage=<name> [overrides]` (Hydra)."""
from __future__ import annotations

import importlib
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, open_dict

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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from pathlib import Path

    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.run_dir = hc.runtime.output_dir
    run_dir = Path(cfg.run_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    done = run_dir / ".done"
    if sweep and done.is_file():
        log.info("job already finished in %s (delete the folder to redo it)", run_dir)
        return None
    (run_dir / "error.txt").unlink(missing_ok=True)
    try:
        result = run_stage(cfg)
    except Exception as e:
        # a failed sweep job leaves its reason where the comparison table will find it
        (run_dir / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
        if sweep:
            raise
        if isinstance(e, UserError):
            log.error("%s", e)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    done.write_text(cfg.stage + "\n")
    return result


if __name__ == "__main__":
    main()
