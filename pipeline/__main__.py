"""The one CLI: `python -m pipeline stage=<name> [overrides]` (Hydra)."""
from __future__ import annotations

import importlib
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, open_dict

from pipeline import identity
from pipeline.attempts import attempt, record_refusal
from pipeline.config_checks import check as check_settings
from pipeline.data.images import set_max_pixels
from pipeline.errors import UserError, describe
from pipeline.lock import FolderInUse, folder_lock
from pipeline.stages import MODULES, STAGES

log = logging.getLogger("pipeline")


def run_stage(cfg: DictConfig):
    """Run `cfg.stage` with a composed config (also what tests call)."""
    if cfg.stage not in STAGES:
        raise UserError(f"stage={cfg.stage!r} is not a stage; choose one of {', '.join(STAGES)}")
    check_settings(cfg)  # every setting, before torch or any model sees one
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
    set_max_pixels(cfg.get("max_image_pixels"))
    identity.use_cache_dir(cfg.paths.get("cache_dir"))
    module = importlib.import_module(f"pipeline.stages.{MODULES.get(cfg.stage, cfg.stage)}")
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the folder for all ranks
        return module.run(cfg)
    # nothing of this run enters the folder before it holds the lock and its guards pass
    # (config.yaml, error.txt, log lines, outputs): see pipeline/attempts.py
    with folder_lock(cfg.run_dir), attempt(cfg, guarded=getattr(module, "GUARDED", False)):
        return module.run(cfg)


def _one_line(e: BaseException) -> UserError | None:
    """The error as the one line a user sees, when it is one: a UserError, or an HTTP error
    of any status (its status and body; never its response headers, which carry cookies)."""
    if isinstance(e, UserError):
        return e
    if hasattr(e, "status_code") and hasattr(e, "headers"):
        return UserError(f"the server answered {describe(e)}; check the server (its log) and "
                         f"rerun")
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.run_dir = hc.runtime.output_dir
    # a finished sweep job is run again, never skipped on its folder name: its stages reuse
    # only weights and shards whose fingerprints match this job's inputs
    sweep = hc.mode == RunMode.MULTIRUN
    try:
        result = run_stage(cfg)
    except Exception as e:
        record_refusal(cfg, e)
        short = _one_line(e)
        if sweep:
            if short is not None and short is not e:
                raise short from None  # Hydra prints it: without the HTTP headers
            raise
        if short is not None:
            if not (isinstance(e, FolderInUse) or getattr(e, "weakseg_refused", False)):
                log.error("%s", short)  # a refused run leaves no line in the folder's log
            print(f"error: {short}", file=sys.stderr)
            sys.exit(2)
        raise
    return result


if __name__ == "__main__":
    main()
