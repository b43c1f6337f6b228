"""A Label Studio ML backend that serves the project's point-supervised Mask R-CNN.

The protocol Label Studio 1.23.2 speaks (its label_studio/ml/api_connector.py): GET /health,
POST /setup, POST /predict {"tasks", "project", "label_config", "params": {"context"}} ->
{"results": [one prediction per task]}, and POST /webhook with the project's annotation
events (Label Studio adds that webhook when the backend is connected). Built on Flask 3:
`label-studio-ml` on PyPI (1.0.9) pins Flask 1.1.2 from 2020, and the maintained
label-studio-ml-backend is only installable from its git repository.

- An annotator draws a box (interactive mode): N points come back, placed where the model's
  mask for that box is least certain and labelled by it, and the mask itself as a read-only
  overlay when the project has a brush control (`annotation.assistant.mask_overlay`).
- A task without context (pre-annotation, "retrieve predictions"): the model's own instances,
  each a box, its points and its mask; the prediction's score is the model's mean certainty,
  so sorting the queue by it puts the tasks the model knows least first.
- After every `retrain_every` submitted annotations, `retrain_command` runs in the background
  (one at a time); `builtin` (annotation/retrain.py) syncs the points, fine-tunes the served
  model on them into a new run folder, points `ml_backend/serving.json` at it and pre-annotates
  the unlabelled tasks again. The backend serves the folder serving.json names (else run_dir)
  and reloads when it or its model.pt changes (a new model version for Label Studio).

    python -m annotation.ml_backend <run folder>/ml_backend/serve.yaml

`stage=annotate` writes serve.yaml: its resolved `annotation` config node, the device and what
it decided (the folder served, the address, the retraining command); the backend reads its
settings from there, the same config as the stage, not from flags of its own.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from annotation.assist import Assistant, box_regions, box_window, drawn_boxes
from annotation.protocol import ASSISTED, MASK
from pipeline.data.images import ImageReadError, read_rgb
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def image_path(url: str, document_root: Path) -> Path:
    """/data/local-files/?d=<relative path> -> the file under document_root (never outside)."""
    q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    if "d" not in q:
        raise UserError(f"task image {url!r} is not a local-files URL (/data/local-files/?d=...)")
    # folded, links not followed: as Label Studio serves it (a linked image folder under
    # the root, annotation.tasks.served_root, stays under it); `..` cannot climb out
    root = Path(os.path.abspath(document_root))
    path = Path(os.path.abspath(root / q["d"][0]))
    if root not in path.parents:
        raise UserError(f"task image {url!r} lies outside the document root {root}")
    if not path.is_file():
        raise UserError(f"task image {path} not found")
    return path


class Backend:
    """The state behind the routes: the model (reloaded when its weights change), the event
    count, the retraining hook."""

    def __init__(self, run_dir, document_root, points: int = 10, score_threshold: float = 0.3,
                 device: str = "cpu", state_dir=None, retrain_every: int = 0,
                 retrain_command: str | None = None, placement: str = "uniform"):
        self.run_dir, self.document_root = Path(run_dir), Path(document_root)
        self.placement = placement   # where a box's points go (annotation.assist.PLACEMENTS)
        self.points, self.score_threshold, self.device = points, score_threshold, device
        self.state_dir = Path(state_dir or self.run_dir / "ml_backend")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.retrain_every, self.retrain_command = retrain_every, retrain_command
        self._lock = threading.Lock()
        self._model, self._key = None, None
        self.submitted = self._count_submitted()
        self.retrain_runs: list[subprocess.Popen] = []

    def model(self) -> Assistant:
        run_dir = serving_dir(self.run_dir)
        weights = run_dir / "model.pt"
        key = (run_dir, weights.stat().st_mtime if weights.is_file() else None)
        with self._lock:
            if self._model is None or key != self._key:
                self._model, self._key = Assistant(run_dir, self.device), key
                log.info("serving %s", self._model.version)
            return self._model

    def predict_task(self, task: dict, context: dict | None, with_mask: bool = False) -> dict:
        m = self.model()
        image = read_rgb(image_path(task["data"]["image"], self.document_root))
        regions, shown = [], []   # (probability map, box) of every region returned
        boxes = drawn_boxes(context)
        if boxes:  # interactive: a box the annotator drew with the Auto-Detect tool
            probs = m.masks_for_boxes(image, [box for _, box, _ in boxes])
            for (rid, box, label), prob in zip(boxes, probs):
                # Label Studio replaces the drawn region by what the backend returns, so
                # the box comes back too (found in the browser test), under a new id: kept
                # under the drawn one it stayed above its points and took their clicks
                # (found in the simulated annotation run); listed after them it lies below
                regions += box_regions(prob, box, self.points, f"{rid}{ASSISTED}", label,
                                       with_box=True, with_mask=with_mask,
                                       placement=self.placement)
                shown.append((prob, box))
        else:
            for k, (box, prob, _) in enumerate(m.detect(image, self.score_threshold)):
                regions += box_regions(prob, box, self.points, f"b{k}", "object",
                                       with_box=True, with_mask=with_mask,
                                       placement=self.placement)
                shown.append((prob, box))
        # points first, then boxes, masks last: Label Studio stacks regions in list order
        order = {"keypointlabels": 0, "rectanglelabels": 1, "brushlabels": 2}
        regions.sort(key=lambda r: order.get(r["type"], 3))
        return {"result": regions, "model_version": m.version,
                "score": task_certainty(shown)}

    def _events(self) -> Path:
        return self.state_dir / "events.jsonl"

    def _count_submitted(self) -> int:
        if not self._events().is_file():
            return 0
        return sum(1 for line in self._events().read_text().splitlines()
                   if json.loads(line).get("action") == "ANNOTATION_CREATED")

    def webhook(self, event: dict) -> dict:
        action = event.get("action", "")
        with self._lock:
            with open(self._events(), "a") as f:  # one line per event: an append is atomic
                f.write(json.dumps({"action": action, "time": time.time(),
                                    "task": (event.get("task") or {}).get("id")}) + "\n")
            if action == "ANNOTATION_CREATED":
                self.submitted += 1
                due = self.retrain_every and self.retrain_command and \
                    self.submitted % self.retrain_every == 0
                if due and self.retrain_runs and self.retrain_runs[-1].poll() is None:
                    log.info("%d annotations submitted; the last retraining still runs: not "
                             "started again", self.submitted)
                elif due:
                    log.info("%d annotations submitted: %s", self.submitted,
                             self.retrain_command)
                    with open(self.state_dir / "retrain.log", "ab") as out:
                        self.retrain_runs.append(subprocess.Popen(
                            self.retrain_command, shell=True, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True))
        return {"status": "ok", "submitted": self.submitted}


def serving_dir(run_dir) -> Path:
    """The run folder to serve: the one `run_dir/ml_backend/serving.json` names (written by
    a retraining), else run_dir itself."""
    pointer = Path(run_dir) / "ml_backend" / "serving.json"
    if pointer.is_file():
        served = Path(json.loads(pointer.read_text())["run_dir"])
        if (served / "model.pt").is_file():
            return served
        log.warning("%s names %s, which has no model.pt; serving %s", pointer, served, run_dir)
    return Path(run_dir)


def box_certainty(prob: np.ndarray, box) -> float:
    """Mean |2p - 1| inside the box: 1 where the model is sure of every pixel, 0 where unsure."""
    x0, y0, x1, y1 = box_window(box, *prob.shape)
    crop = prob[y0:y1, x0:x1]
    return float(np.abs(2 * crop - 1).mean()) if crop.size else 0.0


def task_certainty(shown) -> float:
    """A task's score, which orders the uncertainty queue: the mean box_certainty of its
    (probability map, box) regions, 0 without one."""
    return float(np.mean([box_certainty(prob, box) for prob, box in shown])) if shown else 0.0


def create_app(backend: Backend):
    from flask import Flask, jsonify, request
    app = Flask("weakseg-ml-backend")

    @app.get("/health")
    @app.get("/")
    def health():
        return jsonify({"status": "UP", "model_class": "weakseg point-supervised Mask R-CNN",
                        "run_dir": str(backend.run_dir.resolve())})

    @app.post("/setup")
    def setup():
        return jsonify({"model_version": backend.model().version})

    @app.post("/predict")
    def predict():
        body = request.get_json(force=True, silent=True) or {}
        context = (body.get("params") or {}).get("context")
        # masks only where the project can show them (a brush control named `mask`)
        with_mask = f'name="{MASK}"' in (body.get("label_config") or "") and \
            "<BrushLabels" in (body.get("label_config") or "")
        t0 = time.perf_counter()
        try:
            results = [backend.predict_task(t, context, with_mask)
                       for t in body.get("tasks") or []]
        except (UserError, ImageReadError) as e:   # missing or unreadable image: say which
            return jsonify({"error": str(e)}), 400
        log.info("predicted %d task(s) in %.0f ms", len(results), 1000 * (time.perf_counter() - t0))
        return jsonify({"results": results, "model_version": backend.model().version})

    @app.post("/webhook")
    def webhook():
        return jsonify(backend.webhook(request.get_json(force=True, silent=True) or {}))

    @app.post("/train")  # older Label Studio versions call /train instead of the webhook
    def train():
        return jsonify(backend.webhook({"action": "START_TRAINING"}))

    return app


def serve(backend: Backend, host: str, port: int):
    """A threaded WSGI server (werkzeug's): one labelling team on one machine. Returns the
    server; call serve_forever() (or run it in a thread) and shutdown()."""
    from werkzeug.serving import make_server
    return make_server(host, port, create_app(backend), threaded=True)


def stop(run_dir) -> int | None:
    """Stop the backend started for run_dir (its process group, by the PID it recorded)."""
    import signal
    f = Path(run_dir) / "ml_backend" / "server.json"
    if not f.is_file():
        return None
    pid = json.loads(f.read_text())["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid = None
    f.unlink()
    return pid


def main(argv=None) -> int:
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stop"] and len(argv) == 2:
        pid = stop(argv[1])
        print(f"stopped the labelling assistant (pid {pid})" if pid else
              f"no labelling assistant running for {argv[1]}")
        return 0
    if len(argv) != 1:
        print(__doc__, flush=True)
        return 2
    from omegaconf import OmegaConf
    c = OmegaConf.load(argv[0])
    a, served = c.annotation, c.serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        backend = Backend(served.run_dir, a.document_root, int(a.points_per_box),
                          float(a.assistant.score_threshold), str(c.hardware.device),
                          retrain_every=int(a.assistant.retrain_every) if
                          served.retrain_command else 0,
                          retrain_command=served.retrain_command,
                          placement=str(a.assistant.get("placement", "uniform")))
        backend.model()  # fail now, not at the first click
    except UserError as e:
        print(f"error: {e}", flush=True)
        return 2
    host, port = str(served.host), int(a.assistant.port)
    server = serve(backend, host, port)
    (backend.state_dir / "server.json").write_text(json.dumps(
        {"url": f"http://{host}:{port}", "pid": os.getpid()}))  # stop: `... stop RUN_DIR`
    print(f"ML backend at http://{host}:{port} serving {backend.model().version}",
          flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
