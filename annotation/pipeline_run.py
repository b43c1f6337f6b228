"""The pipeline's stages, run from annotation/ as a user runs them: `python -m pipeline
<overrides>` in a child process. annotation/ reads the pipeline's config (compose_stage) and
its library (COCO files, the model code the assistant serves), never its stages or CLI: the
stages call annotation (`stage=annotate`), not the other way round.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def run_pipeline(args: list[str]) -> None:
    """Run `python -m pipeline *args` with this interpreter and this checkout's code, its
    output passed through; a failure raises the child's own one-line error."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    child = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                             stderr=subprocess.PIPE, text=True, bufsize=1)
    last_error = None
    for line in child.stderr:
        sys.stderr.write(line)
        if line.startswith("error: "):
            last_error = line[len("error: "):].strip()
    if child.wait() != 0:
        stage = next((a for a in args if a.startswith("stage=")), "python -m pipeline")
        raise UserError(last_error or f"{stage} stopped (exit {child.returncode}); its "
                                      f"traceback is above")
