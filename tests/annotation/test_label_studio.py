"""Round trips and faults against a real Label Studio server (no mock server)."""
import json
import secrets
from pathlib import Path

import pytest

from annotation import sync as ls_sync, tasks
from bench.annotator import simulate
from annotation.client import connect
from annotation.server import free_port
from pipeline.data.coco import decode_segmentation, load_coco
from pipeline.errors import UserError

pytestmark = pytest.mark.e2e


@pytest.fixture
def gt(tiny_sample):
    return load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")


@pytest.fixture
def project(label_studio):
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"test-{secrets.token_hex(4)}", ["object"])
    return client, pid


def annotated(client, pid, gt, tiny_sample, n_points):
    """Import the tiny sample, let the simulated annotator answer; return sync arguments."""
    root = tiny_sample / "sample" / "train"
    tasks.import_coco(client, pid, agnostic(gt), root, tiny_sample, n_points=n_points)
    simulate.annotate_all(client, pid, gt)
    return {im["id"]: im for im in gt["images"]}, [{"id": 1, "name": "object"}], root


def agnostic(coco):
    out = dict(coco, categories=[{"id": 1, "name": "object"}])
    out["annotations"] = [dict(a, category_id=1) for a in coco["annotations"]]
    return out


def test_round_trip_points_equal_simulated_clicks(project, gt, tiny_sample, tmp_path):
    client, pid = project
    root = tiny_sample / "sample" / "train"
    r = tasks.import_coco(client, pid, agnostic(gt), root, tiny_sample, n_points=5, seed=1)
    assert r == {"imported": 8, "existing": 0}
    assert tasks.import_coco(client, pid, agnostic(gt), root, tiny_sample, 5, 1)["imported"] == 0
    assert simulate.annotate_all(client, pid, gt, seconds=30.0) == 8
    images = {im["id"]: im for im in gt["images"]}
    out = tmp_path / "points.json"
    res = ls_sync.sync(client, pid, tmp_path, images, [{"id": 1, "name": "object"}], root, out)
    assert res["images"] == 8 and res["instances"] == len(gt["annotations"])
    coco = load_coco(out)
    masks = {}
    for a in gt["annotations"]:
        masks.setdefault(a["image_id"], []).append(
            decode_segmentation(a["segmentation"], 160, 160).astype(bool))
    n = 0
    for a in coco["annotations"]:
        assert len(a["point_coords"]) == 5 and a["lead_time"] > 0
        union = sum(m.astype(int) for m in masks[a["image_id"]]) > 0
        for (x, y), lab in zip(a["point_coords"], a["point_labels"]):
            assert lab == int(union[y, x])   # the simulated annotator's answer, at that pixel
            n += 1
    assert n == 5 * len(gt["annotations"])
    # raw exports were kept
    assert len(list((tmp_path / "raw").glob("task_*.json"))) == 8


def test_deleted_task_and_rerun_without_duplicates(project, gt, tiny_sample, tmp_path):
    client, pid = project
    images, cats, root = annotated(client, pid, gt, tiny_sample, 3)
    out = tmp_path / "points.json"
    ls_sync.sync(client, pid, tmp_path, images, cats, root, out)
    first = load_coco(out)
    victim = next(iter(client.tasks.list(project=pid)))
    client.tasks.delete(str(victim.id))
    res = ls_sync.sync(client, pid, tmp_path, images, cats, root, out)
    assert res["deleted"] == 1
    again = load_coco(out)
    assert len(again["images"]) == len(first["images"]) - 1
    assert (tmp_path / "raw" / f"deleted_task_{victim.id}.json").is_file()
    res = ls_sync.sync(client, pid, tmp_path, images, cats, root, out)   # nothing changed
    assert res["changed"] == 0 and load_coco(out)["annotations"] == again["annotations"]


def test_interrupted_sync_keeps_raw_and_rerun_completes(project, gt, tiny_sample, tmp_path,
                                                        monkeypatch):
    client, pid = project
    images, cats, root = annotated(client, pid, gt, tiny_sample, 2)

    def boom(*a, **k):  # injected fault: conversion dies after the pull
        raise RuntimeError("killed during conversion")
    monkeypatch.setattr(ls_sync, "convert", boom)
    with pytest.raises(RuntimeError):
        ls_sync.sync(client, pid, tmp_path, images, cats, root, tmp_path / "p.json")
    assert len(list((tmp_path / "raw").glob("task_*.json"))) == 8
    assert not (tmp_path / "p.json").exists()
    monkeypatch.undo()
    res = ls_sync.sync(client, pid, tmp_path, images, cats, root, tmp_path / "p.json")
    assert res["images"] == 8


def test_bad_points_and_escaping_paths_are_skipped(project, gt, tiny_sample, tmp_path):
    client, pid = project
    root = tiny_sample / "sample" / "train"
    tasks.import_coco(client, pid, agnostic(gt), root, tiny_sample, n_points=1)
    t = next(iter(client.tasks.list(project=pid, fields="all"))).model_dump(mode="json")
    result = t["predictions"][0]["result"]
    result.append({"type": "keypointlabels", "from_name": "point", "to_name": "image",
                   "original_width": 160, "original_height": 160,
                   "value": {"x": 130.0, "y": 50.0, "width": 0.5, "keypointlabels": ["object"]}})
    client.annotations.create(id=t["id"], result=result, lead_time=5.0)
    images = {im["id"]: im for im in gt["images"]}
    ls_sync.pull(client, pid, tmp_path / "raw")
    # an export whose image path escapes the dataset root (edited or hostile file)
    raw = json.loads((tmp_path / "raw" / f"task_{t['id']}.json").read_text())
    evil = dict(raw, id=999999, data=dict(raw["data"], file_name="../../../etc/passwd"))
    (tmp_path / "raw" / "task_999999.json").write_text(json.dumps(evil))
    coco, warnings = ls_sync.convert(tmp_path / "raw", images, [{"id": 1, "name": "object"}],
                                     root)
    assert any("outside" in w for w in warnings)
    assert any("escapes the dataset root" in w for w in warnings)
    assert len(coco["images"]) == 1


def test_server_down_and_wrong_token(label_studio):
    with pytest.raises(UserError, match="not reachable"):
        connect(f"http://127.0.0.1:{free_port()}", "x")
    with pytest.raises(UserError, match="refused the API token"):
        connect(label_studio.url, "wrong-token")


def test_annotate_stages_feed_point_supervised_training(label_studio, sample_cfg, gt,
                                                        monkeypatch):
    """make annotate -> annotators (simulated) -> make annotate-sync -> supervision=points."""
    from pipeline.__main__ import run_stage
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    port = label_studio.url.rsplit(":", 1)[1]
    common = [f"annotation.port={port}", "annotation.source=gt", "annotation.points_per_box=4",
              "annotation.start_server=false", f"annotation.project=stage-{secrets.token_hex(3)}"]
    res = run_stage(sample_cfg("stage=annotate", *common, run_name="annotate"))
    assert res["imported"] == 8 and res["url"] == label_studio.url
    client = connect(label_studio.url, label_studio.token)
    assert simulate.annotate_all(client, res["project"], gt, seconds=12.0) == 8
    cfg = sample_cfg("stage=annotate_sync", *common, run_name="annotate_sync")
    run_stage(cfg)
    points = Path(cfg.run_dir) / "points.json"
    data = load_coco(points)
    assert len(data["annotations"]) == len(gt["annotations"])
    assert {c["name"] for c in data["categories"]} == {c["name"] for c in gt["categories"]}
    res = run_stage(sample_cfg("stage=maskrcnn", "supervision=points",
                               f"supervision.annotations={points}", "backbone.weights=null",
                               "maskrcnn.train.max_iter=2", "maskrcnn.train.batch_size=2",
                               "overlays=0", run_name="maskrcnn_ls"))
    assert "metrics" in res["val"]


def test_sources_scored_by_synced_points_and_the_best_preannotates_the_rest(
        label_studio, sample_cfg, gt, tmp_path, monkeypatch):
    """After 3 of 8 tasks are annotated, a sync ranks two sources by the annotators' points
    (the ground-truth masks beat the same masks shifted 6 px), and `annotation.source=best`
    pre-annotates the 5 unlabelled tasks from the winner without touching the 3 done."""
    import numpy as np
    from omegaconf import open_dict
    from pipeline.__main__ import run_stage
    from pipeline.data.coco import mask_to_annotation, save_coco
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    port = label_studio.url.rsplit(":", 1)[1]
    common = [f"annotation.port={port}", "annotation.points_per_box=6",
              "annotation.start_server=false", "annotation.assistant.enabled=false",
              f"annotation.project=best-{secrets.token_hex(3)}",
              "annotation.best_min_points=20", "annotation.best_min_images=3"]
    res = run_stage(sample_cfg("stage=annotate", *common, "annotation.source=gt",
                               run_name="annotate"))
    client = connect(label_studio.url, label_studio.token)
    assert simulate.annotate_all(client, res["project"], gt, limit=3) == 3
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    shifted = [mask_to_annotation(np.roll(decode_segmentation(a["segmentation"],
                                                              *sizes[a["image_id"]]), 6, 1),
                                  a["image_id"], 1) for a in gt["annotations"]]
    save_coco(tmp_path / "exact.json", agnostic(gt))
    save_coco(tmp_path / "shifted.json", dict(agnostic(gt), annotations=shifted))
    cfg = sample_cfg("stage=annotate_sync", *common, "annotation.source=gt",
                     run_name="annotate_sync")
    with open_dict(cfg):
        cfg.annotation.sources = {"shifted": str(tmp_path / "shifted.json"),
                                  "exact": str(tmp_path / "exact.json"),
                                  "absent": str(tmp_path / "absent.json")}
    rows = run_stage(cfg)["sources"]
    assert [r["source"] for r in rows] == ["exact", "shifted"]          # absent: not scored
    assert rows[0]["accuracy"] > rows[1]["accuracy"] and rows[0]["points"] > 0
    res = run_stage(sample_cfg("stage=annotate", *common, "annotation.source=best",
                               run_name="annotate"))
    assert res["repredicted"] == 5
    versions = {}
    for t in client.tasks.list(project=res["project"], fields="all"):
        t = t.model_dump(mode="json")
        versions[bool(t["annotations"])] = versions.get(bool(t["annotations"]), []) + [
            {p["model_version"] for p in t["predictions"]}]
    assert all("exact" in v for v in versions[False]) and len(versions[False]) == 5
    assert all(v == {"weakseg"} for v in versions[True]) and len(versions[True]) == 3
    again = run_stage(sample_cfg("stage=annotate", *common, "annotation.source=best",
                                 run_name="annotate"))
    assert again["repredicted"] == 0                                     # a rerun adds nothing


def test_uncertainty_queue_serves_least_certain_task_first(label_studio, gt, tiny_sample):
    """annotation.queue=uncertainty: Label Studio's label stream serves first the task whose
    pre-annotation (the project's model version) has the lowest mean score."""
    import urllib.request
    client = connect(label_studio.url, label_studio.token)
    pid = tasks.get_or_create_project(client, f"queue-{secrets.token_hex(4)}", ["object"],
                                      queue="uncertainty")
    coco = agnostic(gt)
    order = [im["id"] for im in coco["images"]]
    least = order[3]                                   # not the first imported
    coco["annotations"] = [dict(a, score=0.2 if a["image_id"] == least else 0.9)
                           for a in coco["annotations"]]
    tasks.import_coco(client, pid, coco, tiny_sample / "sample" / "train", tiny_sample,
                      n_points=2, model_version="pseudo-v1")
    assert not tasks.show_version(client, pid, "no-such-version")   # a warning, no error
    assert tasks.show_version(client, pid, "pseudo-v1")

    def next_image(project):
        req = urllib.request.Request(f"{label_studio.url}/api/projects/{project}/next",
                                     headers={"Authorization": f"Token {label_studio.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["data"]["weakseg_image_id"]
    assert next_image(pid) == least
    # a served task stays with its annotator, so the other order is asked of a new project
    other = tasks.get_or_create_project(client, f"queue-{secrets.token_hex(4)}", ["object"],
                                        queue="sequential")
    tasks.import_coco(client, other, coco, tiny_sample / "sample" / "train", tiny_sample,
                      n_points=2, model_version="pseudo-v1")
    tasks.show_version(client, other, "pseudo-v1")
    assert next_image(other) == order[0]
    # an existing project takes the configured order
    title = client.projects.get(pid).title
    assert tasks.get_or_create_project(client, title, ["object"], queue="uniform") == pid
    assert client.projects.get(pid).sampling == "Uniform sampling"
    with pytest.raises(UserError, match="annotation.queue='random'"):
        tasks.get_or_create_project(client, "x", ["object"], queue="random")
