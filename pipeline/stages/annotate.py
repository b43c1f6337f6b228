"""Stage `annotate`: start Label Studio if needed, create/update the point-labelling project from
a pseudo-label (or ground-truth) file, and print its URL."""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import OmegaConf

from annotation import server as ls_server
from annotation import tasks
from annotation.client import connect
from annotation.prepare import assistant_dir
from pipeline.data.coco import load_coco, scored_at_least
from pipeline.data.datasets import get_split
from pipeline.errors import UserError
from pipeline.io import read_json, write_json, write_text

log = logging.getLogger(__name__)


def ensure_server(a) -> str:
    url = f"http://{a.host}:{a.port}"
    if ls_server.health(url):
        return url
    if not a.start_server:
        raise UserError(f"Label Studio is not running at {url}; run `make label-studio`")
    password = os.environ.get(a.password_env) or ls_server.admin_password(a.data_dir)
    s = ls_server.start(a.data_dir, int(a.port), ls_server.project_token(a), a.username,
                        password, a.document_root, bind=str(a.get("bind") or a.host))
    log.info("started Label Studio (pid %d) at %s; stop it with `make label-studio-stop`",
             s.pid, s.url)
    return s.url


def assistant_run_dir(url: str) -> str | None:
    """The run folder the assistant at url serves; None when nothing (or something else)
    answers there."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return json.loads(r.read()).get("run_dir")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def retrain_command(s) -> str | None:
    """The assistant's retraining command: `builtin` is annotation/retrain.py with this run's
    own command-line overrides (the same experiment, data and output folders)."""
    if s.retrain_command != "builtin":
        return str(s.retrain_command)
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized():
        log.warning("annotation.assistant.retrain_command=builtin needs the command line "
                    "(`make annotate`, python -m pipeline stage=annotate ...): no retraining")
        return None
    overrides = [o for o in HydraConfig.get().overrides.task
                 if not o.startswith(("stage=", "run_name="))]
    return shlex.join([sys.executable, "-m", "annotation.retrain", *overrides])


def ensure_assistant(a, client, pid: int, device: str = "cpu") -> str | None:
    """Start the ML backend (unless it answers already) and connect it to the project as an
    interactive backend. None, with a line saying why, when there is no trained model yet."""
    s = a.assistant
    if not s.enabled:
        return None
    run_dir = assistant_dir(s)   # the point model, else the one trained on the pseudo-labels
    if run_dir is None:
        log.warning("no assistant: neither %s nor %s has a model.pt (`make annotate` trains "
                    "one on the pseudo-labels); annotating with pre-placed points only",
                    s.run_dir, s.pseudo_label_run_dir)
        return None
    # Label Studio calls its ML backend from this machine: a loopback address, whatever
    # address the team reaches the server by
    host = str(a.host) if ls_server.loopback(str(a.host)) else "127.0.0.1"
    url = f"http://{host}:{s.port}"
    serving = assistant_run_dir(url)
    if serving is not None and Path(serving).resolve() != run_dir.resolve():
        raise UserError(f"{url} already serves an assistant for {serving}, not {run_dir}; stop "
                        f"it (`make label-studio-stop`) or set annotation.assistant.port")
    if serving is None:
        logfile = run_dir / "ml_backend" / "server.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        command = retrain_command(s) if s.retrain_every and s.retrain_command else None
        conf = logfile.with_name("serve.yaml")  # the backend reads this stage's own settings
        write_text(conf, OmegaConf.to_yaml(OmegaConf.create({
            "annotation": OmegaConf.to_container(a, resolve=True),
            "hardware": {"device": device},
            "serve": {"run_dir": str(run_dir), "host": host, "retrain_command": command}})))
        cmd = [sys.executable, "-m", "annotation.ml_backend", str(conf)]
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.time() + 120
        while assistant_run_dir(url) is None:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise UserError(f"the labelling assistant did not start at {url}; see {logfile}")
            time.sleep(0.5)
        log.info("started the labelling assistant (pid %d) at %s", proc.pid, url)
        # `make label-studio-stop` stops it too
        write_json(Path(a.data_dir) / "assistant.json", {"run_dir": str(run_dir)})
    if not any(b.url.rstrip("/") == url for b in client.ml.list(project=pid)):
        client.ml.create(project=pid, url=url, is_interactive=True,
                         title="weakseg assistant (point-supervised Mask R-CNN)")
    return url


def best_row(sync_dir: Path) -> dict:
    """The row (source, file, scores, threshold) of the best-scored pseudo-label source of
    the last `make annotate-sync` (its source_scores.json)."""
    f = sync_dir / "source_scores.json"
    if not f.is_file():
        raise UserError(f"annotation.source=best needs {f}; sync some annotated tasks first "
                        f"(`make annotate-sync`)")
    rows = [r for r in read_json(f, "source scores") if r.get("best")]
    if not rows:
        raise UserError(f"{f} names no best source (too few synced points, a tie, or no "
                        f"source file found: `make annotate-sync` said which); set "
                        f"annotation.source to a file")
    return rows[0]


def annotation_source(cfg, split) -> tuple[str, str, dict]:
    """(model version, file, COCO) of the boxes to annotate: `annotation.source` is a file,
    `gt` (the split's own boxes) or `best` (the source the annotators' points agreed with
    most at the last sync); boxes scored below `annotation.min_score` are left out, and with
    `best` and `annotation.best_threshold`, below the score threshold the points chose for
    that source (best estimated F1, annotation/point_ap.py) as well."""
    version, source = "weakseg", cfg.annotation.source
    low = float(cfg.annotation.get("min_score", 0.0))
    if source == "best":
        row = best_row(Path(cfg.paths.work_dir) / "annotate_sync")
        version, source = row["source"], row["file"]
        if cfg.annotation.get("best_threshold", False) and row.get("threshold") is not None:
            low = max(low, float(row["threshold"]))
    coco = split.coco if source == "gt" else load_coco(source, "annotation.source")
    if low > 0:
        coco = scored_at_least(coco, low)
    return version, source, coco


def run(cfg) -> dict:
    a = cfg.annotation
    url = ensure_server(a)
    client = connect(url, ls_server.project_token(a))
    split = get_split(cfg.dataset, a.split)
    version, source, coco = annotation_source(cfg, split)
    names = [c["name"] for c in coco["categories"]]
    pid = tasks.get_or_create_project(client, a.project, names, int(a.points_per_box),
                                      bool(a.assistant.mask_overlay), a.queue)
    res = tasks.import_coco(client, pid, coco, split.image_root, a.document_root,
                            n_points=int(a.points_per_box), seed=int(a.seed),
                            model_version=version)
    if a.source == "best":
        res["repredicted"] = tasks.repredict_unlabelled(
            client, pid, coco, int(a.points_per_box), int(a.seed), version)
        print(f"\n{res['repredicted']} unlabelled task(s) now pre-annotated from {version} "
              f"({source})")
    else:
        tasks.show_version(client, pid, version)  # the queue orders by these predictions
    assistant = ensure_assistant(a, client, pid, str(cfg.hardware.device))
    print(f"\nLabel Studio project {a.project!r}: {url}/projects/{pid}/data "
          f"({res['imported']} new tasks, {res['existing']} already there)\n"
          + (f"labelling assistant at {assistant}: turn on Auto-Annotation, pick the box "
             f"label and the Auto-Detect tool (M), draw a box: its points come back\n"
             if assistant else "")
          + f"log in as {a.username}; password: ${a.password_env} if set, else the file "
          f"{ls_server.password_file(a.data_dir)}\n"
          f"annotators: one account each, through the invite link "
          f"(`python -m annotation.team invite`; docs/annotators.md)\n")
    return dict(res, project=pid, url=url, assistant=assistant)
