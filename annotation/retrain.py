"""The labelling assistant's built-in retraining (`annotation.assistant.retrain_command=builtin`).

Run by the ML backend after every `retrain_every` submitted annotations, in the background:
1. sync: the annotators' points into COCO (`stage=annotate_sync`, raw export kept first);
2. fine-tune the model being served (Mask R-CNN or AdaMixer, as its run says) on every synced
   point (`stage=student supervision=points`, `<model>.train.init` = the served model.pt) into
   a new run folder: the served folder is a finished run whose weights guard would refuse
   other inputs, and the next request must never meet half-written weights;
3. point `ml_backend/serving.json` at the new folder (an atomic write): the backend serves it
   from its next request on, as a new model version;
4. pre-annotate every task nobody has annotated yet with the new model (its boxes, points where
   it is least certain, its certainty as the score) and make the project queue by them.

    python -m annotation.retrain [hydra overrides of the `make annotate` run]
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from omegaconf import open_dict

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_stage(overrides: list[str], *extra: str):
    """The config `python -m pipeline <overrides> <extra>` would run, with its run folder."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *extra])
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.paths.work_dir) / cfg.run_name)
    return cfg


def publish(served_run_dir, new_run_dir) -> Path:
    """Make the backend of `served_run_dir` serve `new_run_dir` from its next request on."""
    from pipeline.io import write_json
    pointer = Path(served_run_dir) / "ml_backend" / "serving.json"
    write_json(pointer, {"run_dir": str(Path(new_run_dir).resolve()), "time": time.time()})
    return pointer


def repredict(cfg, backend) -> int:
    """New predictions of the backend's current model for every task without an annotation;
    the project then shows and queues by that model version."""
    from annotation import tasks
    from annotation.client import connect
    from annotation.server import project_token
    a = cfg.annotation
    client = connect(f"http://{a.host}:{a.port}", project_token(a))
    return tasks.repredict_tasks(client, tasks.find_project(client, a.project),
                                 backend.model().version,
                                 lambda task: backend.predict_task(task, None))


def retrain(overrides: list[str]) -> dict:
    from annotation.ml_backend import Backend, serving_dir
    from annotation.assist import run_model
    from annotation.prepare import assistant_dir, student_args
    from annotation.pipeline_run import run_pipeline
    from pipeline.data.coco import load_coco
    from pipeline.errors import UserError
    base = [o for o in overrides if not o.startswith(("stage=", "run_name="))]
    sync_args = [*base, "stage=annotate_sync", "run_name=annotate_sync"]
    sync = compose_stage(sync_args)
    run_pipeline(sync_args)
    points = Path(sync.run_dir) / "points.json"
    synced = load_coco(points, "the synced points (stage=annotate_sync)")
    synced = {"images": len(synced["images"]), "instances": len(synced["annotations"])}
    s = sync.annotation.assistant
    home = assistant_dir(s)     # the folder the backend was started on (make annotate)
    if home is None:
        raise UserError(f"no labelling assistant to fine-tune: neither {s.run_dir} nor "
                        f"{s.pseudo_label_run_dir} has a model.pt; run `make annotate`")
    served = serving_dir(home)
    name = f"{home.name}_retrain/{time.strftime('%Y%m%d-%H%M%S')}"
    train_args = [
        *[o for o in base if not o.startswith("model=")],
        *student_args(run_model(served), "points", init=served / "model.pt",
                      max_iter=int(s.retrain_iter),
                      warmup_iter=min(int(s.retrain_iter) // 10, 50)),
        f"supervision.annotations={points}", f"run_name={name}"]
    train = compose_stage(train_args)
    log.info("fine-tuning %s on the points of %d image(s) -> %s", served, synced["images"],
             train.run_dir)
    run_pipeline(train_args)
    publish(home, train.run_dir)
    backend = Backend(home, sync.annotation.document_root,
                      int(sync.annotation.points_per_box), float(s.score_threshold),
                      sync.hardware.device, placement=str(s.get("placement", "uniform")))
    n = repredict(sync, backend)
    log.info("serving %s; %d unlabelled task(s) pre-annotated again", backend.model().version, n)
    return {"images": synced["images"], "instances": synced["instances"],
            "run_dir": train.run_dir, "version": backend.model().version, "repredicted": n}


def main(argv=None) -> int:
    from pipeline.errors import UserError
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        res = retrain(list(sys.argv[1:] if argv is None else argv))
    except UserError as e:
        print(f"error: {e}", flush=True)
        return 2
    print(f"retrained on {res['instances']} instance(s) of {res['images']} image(s): "
          f"{res['run_dir']} serves as {res['version']}; {res['repredicted']} task(s) "
          f"pre-annotated again", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
