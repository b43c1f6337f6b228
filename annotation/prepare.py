"""What `make annotate` needs before it starts the server, each done only when missing.

    python -m annotation.prepare check [overrides]      exit 1 (naming the files) when a
        pseudo-label file that annotation reads is missing: `make annotate` then runs
        `make pseudo-labels`, and otherwise leaves those stages alone
    python -m annotation.prepare assistant [overrides]  train the labelling assistant on the
        pseudo-labels when no point model exists (a Mask R-CNN, `supervision=solo`, into
        annotation.assistant.pseudo_label_run_dir): an assistant from the first task on,
        made without a human label or ground truth. Its weights carry the training stage's
        provenance stamp: a rerun on the same pseudo-labels reuses them, other pseudo-labels
        are refused in one line. The active-learning retraining (annotation/retrain.py)
        fine-tunes it on the annotators' points as they arrive.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import open_dict

from pipeline.errors import UserError

log = logging.getLogger(__name__)


def assistant_dir(s) -> Path | None:
    """The run folder the labelling assistant (config node `annotation.assistant`) starts
    from: `run_dir` when it holds a trained point model, else `pseudo_label_run_dir` when
    trained; None when neither is."""
    for d in (s.get("run_dir"), s.get("pseudo_label_run_dir")):
        if d and (Path(str(d)) / "model.pt").is_file():
            return Path(str(d))
    return None


def student_args(model: str, supervision: str, evaluate=(), **train) -> list[str]:
    """`python -m pipeline` arguments that train the student `model` (maskrcnn | adamixer)
    under `supervision`, `<model>.train.<key>=<value>` for each of `train`, no overlays, and
    evaluated on the splits `evaluate` only (none by default: a user's images have no ground
    truth to evaluate on; the benchmarks name theirs)."""
    return ["stage=student", f"model={model}", f"supervision={supervision}",
            f"{model}.eval_splits=[{','.join(evaluate)}]", "overlays=0",
            *[f"{model}.train.{k}={v}" for k, v in train.items()]]


def assistant_model(overrides: list[str]) -> str:
    """annotation.assistant.model of these overrides: the student the assistant serves."""
    from annotation.assist import SERVED
    from annotation.retrain import compose_stage
    m = str(compose_stage(overrides).annotation.assistant.model)
    if m not in SERVED:
        raise UserError(f"annotation.assistant.model={m}: the assistant serves "
                        f"{' or '.join(SERVED)}")
    return m


def assistant_args(overrides: list[str], evaluate=()) -> list[str]:
    """The training stage of the pseudo-label assistant, as `python -m pipeline` arguments:
    the student of annotation.assistant.model with supervision=solo (the pseudo-labels as
    masks) for annotation.assistant.train_iter iterations (evaluated on `evaluate` only)."""
    base = [o for o in overrides if not o.startswith(("stage=", "run_name=", "supervision=",
                                                      "model="))]
    return [*base, *student_args(assistant_model(overrides), "solo", evaluate,
                                 max_iter="${annotation.assistant.train_iter}")]


def assistant_stage(overrides: list[str]):
    """The composed config of `assistant_args`, run in annotation.assistant.pseudo_label_run_dir."""
    from annotation.retrain import compose_stage
    cfg = compose_stage(assistant_args(overrides))
    if not cfg.supervision.annotations:
        raise UserError("the labelling assistant trains on pseudo-labels only: "
                        "supervision.annotations must name the pseudo-label file, not null "
                        "(null would mean the dataset's ground truth)")
    with open_dict(cfg):
        cfg.run_dir = str(cfg.annotation.assistant.pseudo_label_run_dir)
    return cfg


def needed_files(overrides: list[str]) -> list[Path]:
    """The pseudo-label files `make annotate` reads that `make pseudo-labels` makes: the
    boxes to pre-annotate (annotation.source, unless `gt` or `best`) and, when the assistant
    has no model yet, the pseudo-labels it trains on."""
    from annotation.retrain import compose_stage
    cfg = compose_stage(overrides, "stage=annotate")
    a = cfg.annotation
    files = [] if a.source in ("gt", "best") else [Path(str(a.source))]
    if a.assistant.enabled and assistant_dir(a.assistant) is None:
        files.append(Path(str(assistant_stage(overrides).supervision.annotations)))
    return files


def train_assistant(overrides: list[str]) -> Path | None:
    """Train the pseudo-label assistant unless a point model or a finished one is there;
    returns the folder the assistant will serve (None: the assistant is off)."""
    from annotation.pipeline_run import run_pipeline
    from annotation.retrain import compose_stage
    a = compose_stage(overrides, "stage=annotate").annotation
    if not a.assistant.enabled:
        return None
    have = assistant_dir(a.assistant)
    cfg = assistant_stage(overrides)
    if have is not None and have != Path(cfg.run_dir):
        log.info("labelling assistant: the point model in %s", have)
        return have
    if have is None:
        print(f"training the labelling assistant on the pseudo-labels "
              f"({cfg.supervision.annotations}, {cfg.model}, "
              f"{cfg[cfg.model].train.max_iter} iterations) "
              f"-> {cfg.run_dir}", flush=True)
    # finished weights of the same inputs are reused, others refused
    run_pipeline([*assistant_args(overrides), f"hydra.run.dir={cfg.run_dir}"])
    return Path(cfg.run_dir)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if argv[:1] == ["check"]:
            missing = [f for f in needed_files(argv[1:]) if not f.is_file()]
            for f in missing:
                print(f"{f} not found: running `make pseudo-labels` first", flush=True)
            return 1 if missing else 0
        if argv[:1] == ["assistant"]:
            d = train_assistant(argv[1:])
            print(f"labelling assistant: {d}" if d else "labelling assistant: off "
                  "(annotation.assistant.enabled=false)", flush=True)
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
