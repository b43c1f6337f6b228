"""The labelling assistant: uncertain points, the ML backend protocol against a real Label
Studio server (it calls /health, /setup, /predict and the webhook itself)."""
import json
import re
import secrets
import time
from pathlib import Path

import numpy as np
import pytest

from annotation import protocol, tasks
from annotation.assist import box_regions, drawn_boxes, uncertain_points, uniform_points
from annotation.client import connect
from annotation.ml_backend import image_path
from annotation.server import free_port
from pipeline.__main__ import run_stage
from pipeline.data.coco import load_coco
from pipeline.errors import UserError


def disc(h=40, w=40, cx=20, cy=20, r=10, soft=2.0):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    d = np.hypot(xx - cx, yy - cy)
    return 1 / (1 + np.exp((d - r) / soft))          # p = 0.5 on the circle of radius r


def test_points_go_where_the_mask_is_least_certain_and_spread_out():
    prob = disc()
    pts = uncertain_points(prob, (5, 5, 35, 35), 8)
    assert len(pts) == 8
    radii = [np.hypot(x - 20, y - 20) for x, y, _ in pts]
    assert all(abs(r - 10) < 1.5 for r in radii)       # on the uncertain boundary, not inside
    spacing = 0.5 * 30 / np.sqrt(8)
    for i, (x, y, _) in enumerate(pts):
        for x2, y2, _ in pts[i + 1:]:
            assert np.hypot(x - x2, y - y2) >= spacing - 1e-9
    # each is labelled by the model's side of 0.5
    for x, y, obj in pts:
        assert obj == (prob[int(y), int(x)] >= 0.5)
    # a uniform sample would mostly land where p is near 0 or 1
    assert np.mean([abs(prob[int(y), int(x)] - 0.5) for x, y, _ in pts]) < 0.2


def test_points_stay_inside_the_box_and_clip_to_the_image():
    pts = uncertain_points(disc(), (30, 30, 60, 60), 5)
    assert pts and all(30 <= x < 40 and 30 <= y < 40 for x, y, _ in pts)
    assert uncertain_points(disc(), (50, 50, 60, 60), 5) == []


def test_uniform_points_fill_the_box_labelled_by_the_model_and_repeat_for_the_same_box():
    prob = disc()
    pts = uniform_points(prob, (4, 6, 36, 30), 200)
    assert len(pts) == 200 and all(4 <= x < 36 and 6 <= y < 30 for x, y, _ in pts)
    for x, y, obj in pts:
        assert obj == (prob[int(y), int(x)] >= 0.5)
    # spread over the box, not on the boundary (uncertain points: ~0.01 here)
    assert np.mean([abs(prob[int(y), int(x)] - 0.5) for x, y, _ in pts]) > 0.25
    assert np.std([x for x, _, _ in pts]) > 7 and np.std([y for _, y, _ in pts]) > 5
    assert uniform_points(prob, (4, 6, 36, 30), 5) == uniform_points(prob, (4, 6, 36, 30), 5)
    assert uniform_points(prob, (50, 50, 60, 60), 5) == []
    ids = [r["id"] for r in box_regions(prob, [4, 6, 36, 30], 5, "b0", "object", with_box=True,
                                        with_mask=False, placement="uniform")]
    assert ids == [f"b0_p{j}" for j in range(5)] + ["b0"]


def test_assistant_points_belong_to_the_drawn_box_and_die_with_it():
    prob = disc(h=40, w=40)
    box = [8.0, 8.0, 32.0, 32.0]
    regions = box_regions(prob, box, 6, "Xk3pq9_a", "object", with_box=False)
    drawn = protocol.box_result([8, 8, 24, 24], 40, 40, "object", "Xk3pq9_a")
    kinds = [r["type"] for r in regions]
    assert kinds == ["keypointlabels"] * 6 + ["brushlabels"]   # points first, mask last
    assert regions[-1]["readonly"] and regions[-1]["value"]["rle"]
    inst, warn = protocol.results_to_instances(regions + [drawn], 40, 40, {"object": 1}, 6)
    assert len(inst) == 1 and len(inst[0]["point_labels"]) == 6 and not warn
    # the drawn box deleted: its assistant points are dropped, not given to another box
    other = protocol.box_result([0, 0, 40, 40], 40, 40, "object", "b0")
    inst, warn = protocol.results_to_instances(regions + [other], 40, 40, {"object": 1}, 6)
    assert inst[0]["point_labels"] == [] and sum("deleted box" in w for w in warn) == 6


def test_drawn_boxes_read_label_studio_percent_coordinates():
    r = protocol.box_result([10, 20, 30, 40], 200, 100, "object", "abc")
    assert drawn_boxes({"result": [r]}) == [("abc", pytest.approx([10, 20, 40, 60]), "object")]
    assert drawn_boxes(None) == [] and drawn_boxes({"result": [{"type": "keypointlabels"}]}) == []
    # Label Studio sends every box of the control: the pre-annotated ones ("prediction"), an
    # earlier drawing, the new one last; only the box just drawn is answered
    pre = [dict(protocol.box_result([0, 0, 5, 5], 200, 100, "object", f"b{k}"),
                origin="prediction") for k in range(3)]
    earlier = dict(protocol.box_result([50, 50, 10, 10], 200, 100, "object", "old"),
                   origin="manual")
    new = dict(r, origin="manual")
    assert [b[0] for b in drawn_boxes({"result": [*pre, earlier, new]})] == ["abc"]
    assert [b[0] for b in drawn_boxes({"result": [*pre, new, pre[0]]})] == ["abc"]


def test_image_urls_resolve_only_under_the_document_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    assert image_path("/data/local-files/?d=a/x.png", tmp_path) == tmp_path / "a" / "x.png"
    with pytest.raises(UserError, match="outside the document root"):
        image_path("/data/local-files/?d=../etc/passwd", tmp_path / "a")
    with pytest.raises(UserError, match="not a local-files URL"):
        image_path("http://example.com/x.png", tmp_path)


def ml_project_title(client, pid):
    return client.projects.get(pid).title


@pytest.fixture(scope="module")
def point_model(tmp_path_factory, tiny_sample):
    """A point-supervised Mask R-CNN trained for a few iterations on the tiny sample."""
    from tests.conftest import TINY_SAMPLE, make_cfg
    tmp = tmp_path_factory.mktemp("assist")
    cfg = make_cfg(tmp, f"paths.data_dir={tiny_sample}", *TINY_SAMPLE, "stage=maskrcnn",
                   "supervision=points", "backbone.weights=null", "maskrcnn.train.max_iter=3",
                   "maskrcnn.train.batch_size=2", "maskrcnn.eval_splits=[]", "overlays=0",
                   run_name="maskrcnn_points")
    run_stage(cfg)
    return Path(cfg.run_dir)


@pytest.mark.e2e
def test_the_assistant_labels_pre_annotated_points_and_places_uniform_points(
        tiny_sample, point_model):
    """labelled_by (a source the planned-edits bench costs): each source box keeps its box
    and score and takes the assistant's mask for it; and a backend with placement=uniform
    answers a drawn box with uniform points labelled by the assistant."""
    from annotation.assist import Assistant, labelled_by, uniform_points
    from annotation.ml_backend import Backend
    from pipeline.data.coco import decode_segmentation
    from pipeline.data.images import read_rgb
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    coco = dict(gt, images=gt["images"][:2],
                annotations=[dict(a, score=0.5) for a in gt["annotations"]
                             if a["image_id"] in {im["id"] for im in gt["images"][:2]}])
    model = Assistant(point_model)
    out = labelled_by(model, coco, tiny_sample / "sample" / "train")
    assert [(a["id"], a["bbox"], a["score"]) for a in out["annotations"]] == \
        [(a["id"], a["bbox"], a["score"]) for a in coco["annotations"]]
    im = coco["images"][0]
    image = read_rgb(tiny_sample / "sample" / "train" / im["file_name"])
    anns = [a for a in out["annotations"] if a["image_id"] == im["id"]]
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
              a["bbox"][1] + a["bbox"][3]] for a in anns]
    for a, prob in zip(anns, model.masks_for_boxes(image, boxes)):
        assert (decode_segmentation(a["segmentation"], im["height"], im["width"]).astype(bool)
                == (prob >= 0.5)).all()
    backend = Backend(point_model, tiny_sample, points=6, placement="uniform",
                      state_dir=tiny_sample / "state_uniform")
    task = {"data": {"image": f"/data/local-files/?d=sample/train/{im['file_name']}"}}
    drawn = protocol.box_result([20, 20, 60, 50], im["width"], im["height"], "object", "d1")
    got = [(protocol.to_pixels(r["value"], im["width"], im["height"], ("x", "y")),
            r["value"]["keypointlabels"][0] == protocol.OBJECT)
           for r in backend.predict_task(task, {"result": [drawn]})["result"]
           if r["type"] == "keypointlabels"]
    prob = model.masks_for_boxes(image, [[20, 20, 80, 70]])[0]
    want = uniform_points(prob, [20, 20, 80, 70], 6)
    assert [obj for _, obj in got] == [obj for *_, obj in want]
    assert np.allclose([xy for xy, _ in got], [(x, y) for x, y, _ in want], atol=0.5)


@pytest.mark.e2e
def test_make_annotate_starts_the_assistant_that_label_studio_asks_for_a_drawn_box(
        label_studio, tiny_sample, point_model, sample_cfg, monkeypatch, tmp_path):
    """`make annotate` starts the backend and connects it; Label Studio then calls /health,
    /setup, /predict (with the drawn box as context) and the webhook itself."""
    from annotation import ml_backend
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    port = label_studio.url.rsplit(":", 1)[1]
    res = run_stage(sample_cfg(
        "stage=annotate", f"annotation.port={port}", "annotation.source=gt",
        "annotation.points_per_box=7", "annotation.start_server=false",
        f"annotation.project=assist-{secrets.token_hex(3)}",
        f"annotation.assistant.run_dir={point_model}", f"annotation.assistant.port={free_port()}",
        "annotation.assistant.retrain_every=2",
        f"annotation.assistant.retrain_command='touch {tmp_path / 'retrained'}'",
        run_name="annotate_assist"))
    try:
        client = connect(label_studio.url, label_studio.token)
        [ml] = client.ml.list(project=res["project"])
        assert ml.url.rstrip("/") == res["assistant"] and ml.is_interactive
        assert client.ml.get(ml.id).state == "CO"          # /health and /setup answered
        task = next(iter(client.tasks.list(project=res["project"])))
        drawn = protocol.box_result([40, 40, 60, 50], 160, 160, "object", "drawnBox1")

        def ask():
            resp = client.ml.with_raw_response.predict_interactive(
                ml.id, task=task.id, context={"result": [drawn]})
            result = json.loads(resp.response.text)["data"]["result"]
            return ([r for r in result if r["type"] == "keypointlabels"],
                    [r for r in result if r["type"] == "brushlabels"])
        points, masks = ask()
        assert len(points) == 7 and masks == []      # the default project shows no masks
        for r in points:   # inside the drawn box (percent of the 160 px image), tied to it
            v = r["value"]
            assert 25 <= v["x"] <= 62.5 and 25 <= v["y"] <= 56.25
            assert protocol.point_owner(r["id"]) == "drawnBox1_a"   # the box, re-issued
        # a project with the brush control gets the mask too
        tasks.get_or_create_project(client, ml_project_title(client, res["project"]),
                                    ["object"], 7, mask_overlay=True)
        points, masks = ask()
        assert len(points) == 7 and len(masks) == 1 and masks[0]["value"]["rle"]
        # submissions reach the webhook; every 2nd one runs the retraining command
        for t in list(client.tasks.list(project=res["project"]))[:2]:
            client.annotations.create(id=t.id, result=[], lead_time=1.0)
        deadline = time.time() + 30
        while time.time() < deadline and not (tmp_path / "retrained").exists():
            time.sleep(0.2)
        assert (tmp_path / "retrained").exists()
        events = (point_model / "ml_backend" / "events.jsonl").read_text().splitlines()
        assert sum(json.loads(e)["action"] == "ANNOTATION_CREATED" for e in events) == 2
        # the port serves this model: another run folder there is refused, not connected
        from omegaconf import OmegaConf
        from pipeline.stages.annotate import ensure_assistant
        port = res["assistant"].rsplit(":", 1)[1]
        other = OmegaConf.create({"host": "127.0.0.1", "data_dir": str(tmp_path), "assistant": {
            "enabled": True, "run_dir": str(tmp_path), "port": port}})
        (tmp_path / "model.pt").write_bytes(b"")
        with pytest.raises(UserError, match="already serves an assistant for"):
            ensure_assistant(other, client, res["project"])
    finally:
        assert ml_backend.stop(point_model)


def test_backend_errors_name_the_missing_file(tmp_path):
    from annotation.ml_backend import Backend, create_app
    app = create_app(Backend(tmp_path / "no_run", tmp_path, state_dir=tmp_path / "s"))
    c = app.test_client()
    assert c.get("/health").get_json()["status"] == "UP"
    r = c.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=x"}}]})
    assert r.status_code == 400 and "no_run/config.yaml not found" in r.get_json()["error"]


@pytest.mark.e2e
def test_a_box_drawn_in_the_browser_gets_the_assistants_points(
        label_studio, tiny_sample, point_model, sample_cfg, monkeypatch, tmp_path):
    """The real UI: Auto-Annotation on, the box label and Label Studio's Auto-Detect tool, a box
    drawn; Label Studio sends it to the assistant, whose points appear tied to the box, and
    sync gives the box those points. Found on the way: without smart="true" on the box
    control a drawn box never reached the backend, and Label Studio replaces the drawn region
    by the backend's answer, so the answer must hold the box too (else the box vanished and
    sync dropped its points)."""
    from playwright.sync_api import sync_playwright

    from annotation import ml_backend
    from annotation import sync as ls_sync
    from pipeline.data.coco import load_coco
    from bench.annotator.browser import auto_annotation, image_box
    from tests.annotation.test_browser import CHROMIUM, labeling_page
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian chromium is required (`make test` installs it)")
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    port = label_studio.url.rsplit(":", 1)[1]
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    info = gt["images"][0]
    empty = tmp_path / "no_boxes.json"   # a task with no pre-annotation: the drawn box is alone
    from pipeline.data.coco import make_coco, save_coco
    save_coco(empty, make_coco([info], [], [{"id": 1, "name": "object"}]))
    res = run_stage(sample_cfg(
        "stage=annotate", f"annotation.port={port}", f"annotation.source={empty}",
        "annotation.points_per_box=5", "annotation.start_server=false",
        f"annotation.project=draw-{secrets.token_hex(3)}",
        f"annotation.assistant.run_dir={point_model}", f"annotation.assistant.port={free_port()}",
        run_name="annotate_draw"))
    try:
        client = connect(label_studio.url, label_studio.token)
        tid = next(iter(client.tasks.list(project=res["project"]))).id
        w, h = info["width"], info["height"]
        box = (40, 40, 100, 90)                                    # x0, y0, x1, y1 in pixels
        with sync_playwright() as p, labeling_page(p, label_studio, res["project"], tid,
                                                   tmp_path, height=1200) as page:
            auto_annotation(page)
            bb = image_box(page)

            def screen(x, y):
                return bb["x"] + x * bb["width"] / w, bb["y"] + y * bb["height"] / h
            page.locator(".lsf-label", has_text=re.compile(r"object\s*b$")).click()  # box label
            page.keyboard.press("m")        # Label Studio's Auto-Detect (smart) tool: its boxes
            # are the ones sent to the backend; the plain box tool's are not
            page.mouse.move(*screen(box[0], box[1]))
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(*screen(box[0] + (box[2] - box[0]) * k / 10,
                                        box[1] + (box[3] - box[1]) * k / 10))
            page.mouse.up()
            page.wait_for_timeout(3000)                            # the backend answers
            page.screenshot(path=str(tmp_path / "drawn.png"))
        raw = ls_sync.pull(client, res["project"], tmp_path / "raw")
        assert raw["tasks"] == 1
        export = json.loads(next((tmp_path / "raw").glob("task_*.json")).read_text())
        result = export["annotations"][0]["result"]
        boxes = [r for r in result if r["type"] == "rectanglelabels"]
        points = [r for r in result if r["type"] == "keypointlabels"]
        assert len(boxes) == 1, f"see {tmp_path / 'drawn.png'}"
        assert len(points) == 5 and all(protocol.point_owner(r["id"]) == boxes[0]["id"]
                                        for r in points), f"see {tmp_path / 'drawn.png'}"
        v = boxes[0]["value"]                                      # where it was drawn
        assert abs(v["x"] * w / 100 - box[0]) < 1.5 and abs(v["width"] * w / 100 - 60) < 1.5
        for r in points:                                           # inside the drawn box
            x, y = r["value"]["x"] * w / 100, r["value"]["y"] * h / 100
            assert box[0] - 1 <= x <= box[2] + 1 and box[1] - 1 <= y <= box[3] + 1
        out = tmp_path / "points.json"                             # sync keeps them together
        got = ls_sync.sync(client, res["project"], tmp_path, {info["id"]: info},
                           [{"id": 1, "name": "object"}], tiny_sample / "sample" / "train", out, 5)
        assert got["dropped_points"] == 0
        [inst] = load_coco(out)["annotations"]
        assert len(inst["point_labels"]) == 5
    finally:
        assert ml_backend.stop(point_model)


@pytest.mark.e2e
def test_builtin_retraining_serves_a_fine_tuned_model_and_repredicts_the_rest(
        label_studio, tiny_sample, point_model, monkeypatch, tmp_path):
    """annotation.assistant.retrain_command=builtin: 3 of 8 tasks annotated -> sync, the served
    model fine-tuned on their points into a new folder, served from then on, and the 5
    unlabelled tasks pre-annotated again by it; the 3 done are not touched."""
    import shutil
    from bench.annotator import simulate
    from annotation.ml_backend import Backend, serving_dir
    from annotation.retrain import compose_stage, retrain
    from pipeline.data.coco import load_coco
    from tests.conftest import TINY_SAMPLE
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    served = tmp_path / "served"          # a copy: the module's model stays as it is
    served.mkdir()
    for f in ("model.pt", "config.yaml"):
        shutil.copy(point_model / f, served / f)
    port = label_studio.url.rsplit(":", 1)[1]
    overrides = [f"paths.data_dir={tiny_sample}", *TINY_SAMPLE,
                 f"paths.output_dir={tmp_path / 'outputs'}", f"annotation.port={port}",
                 "annotation.source=gt", "annotation.points_per_box=5",
                 "annotation.start_server=false", "annotation.assistant.enabled=false",
                 f"annotation.project=retrain-{secrets.token_hex(3)}",
                 f"annotation.assistant.run_dir={served}", "annotation.assistant.retrain_iter=2",
                 "backbone.weights=null", "maskrcnn.train.batch_size=2"]
    res = run_stage(compose_stage(overrides, "stage=annotate", "run_name=annotate"))
    client = connect(label_studio.url, label_studio.token)
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    assert simulate.annotate_all(client, res["project"], gt, limit=3) == 3
    before = Backend(served, tiny_sample).model().version

    out = retrain(overrides)
    assert out["images"] == 3 and out["repredicted"] == 5
    new = Path(out["run_dir"])
    assert (new / "model.pt").is_file() and new.parent.name == "served_retrain"
    assert serving_dir(served) == new.resolve()
    backend = Backend(served, tiny_sample)      # what a running backend serves next
    assert backend.model().version == out["version"] != before
    assert out["version"].startswith(new.name)
    versions = {}
    for t in client.tasks.list(project=res["project"], fields="all"):
        t = t.model_dump(mode="json")
        versions.setdefault(bool(t["annotations"]), []).append(
            {p["model_version"] for p in t["predictions"]})
    assert len(versions[False]) == 5 and all(out["version"] in v for v in versions[False])
    assert len(versions[True]) == 3 and all(out["version"] not in v for v in versions[True])
    assert client.projects.get(res["project"]).model_version == out["version"]
    # the fine-tuned weights started from the served ones (init), not from scratch
    assert f"init: {served / 'model.pt'}" in (new / "config.yaml").read_text()


def test_a_retraining_still_running_is_not_started_again(tmp_path):
    from annotation.ml_backend import Backend
    backend = Backend(tmp_path, tmp_path, retrain_every=1,
                      retrain_command=f"sleep 30; touch {tmp_path / 'late'}")
    try:
        for _ in range(3):
            backend.webhook({"action": "ANNOTATION_CREATED", "task": {"id": 1}})
        assert backend.submitted == 3 and len(backend.retrain_runs) == 1
    finally:
        import os
        import signal
        for p in backend.retrain_runs:
            os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=["maskrcnn", "adamixer"])
def student_run(request, tmp_path_factory, tiny_sample):
    """A point-supervised student of each kind the assistant serves, a few iterations."""
    from tests.conftest import TINY_SAMPLE, make_cfg
    m = request.param
    tmp = tmp_path_factory.mktemp(f"assist_{m}")
    cfg = make_cfg(tmp, f"paths.data_dir={tiny_sample}", *TINY_SAMPLE, "stage=student",
                   f"model={m}", "supervision=points", "supervision.agnostic=true",
                   "backbone.weights=null",
                   f"{m}.train.max_iter=3", f"{m}.train.batch_size=2", f"{m}.eval_splits=[]",
                   "overlays=0", run_name=f"{m}_points")
    run_stage(cfg)
    return Path(cfg.run_dir)


def test_the_assistant_serves_mask_rcnn_and_adamixer_alike(tiny_sample, student_run):
    """annotation.assistant.model: either student answers a box with its mask head's mask
    for that box: for the model's own detections, the same map `detect` returns (one class:
    a drawn box's mask is the most likely class's, a detection's its own class's)."""
    from annotation.assist import Assistant
    from pipeline.data.images import read_rgb
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    im = gt["images"][0]
    image = read_rgb(tiny_sample / "sample" / "train" / im["file_name"])
    model = Assistant(student_run)
    assert model.kind == student_run.name.split("_")[0]
    found = model.detect(image, 0.0)[:5]
    assert found, "an untrained head still scores its queries / proposals"
    probs = model.masks_for_boxes(image, [box for box, _, _ in found])
    assert probs.shape == (len(found), im["height"], im["width"])
    assert ((probs >= 0) & (probs <= 1)).all()
    for (_, prob, _), again in zip(found, probs):
        assert np.abs(prob - again).max() < 0.05
