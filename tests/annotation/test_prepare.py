"""`make annotate` before the server: pseudo-label stages only when their files are missing, and
an assistant from the first task on, trained on the pseudo-labels (never on ground truth)."""
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from annotation.prepare import assistant_dir, main, needed_files, train_assistant
from pipeline.data.coco import load_coco, save_coco
from pipeline.errors import UserError
from tests.conftest import TINY_SAMPLE


@pytest.fixture
def overrides(tmp_path, tiny_sample):
    return [f"paths.output_dir={tmp_path / 'outputs'}", f"paths.data_dir={tiny_sample}",
            *TINY_SAMPLE, "backbone.weights=null", "maskrcnn.train.max_iter=3",
            "annotation.assistant.train_iter=3",
            "maskrcnn.train.batch_size=2", "+maskrcnn.inference.speed_images=1"]


def pseudo_labels(tiny_sample, work: Path, keep: int = 2) -> Path:
    """A stand-in for SOLO's pseudo-labels: some masks per image, class-agnostic, scored.
    (The sample's masks; what matters here is which file the assistant trains on.)"""
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    anns, seen = [], {}
    for a in gt["annotations"]:
        seen[a["image_id"]] = seen.get(a["image_id"], 0) + 1
        if seen[a["image_id"]] <= keep:
            anns.append(dict(a, category_id=1, score=0.8))
    f = work / "solo" / "pseudo_labels.json"
    save_coco(f, dict(gt, annotations=anns, categories=[{"id": 1, "name": "object"}]))
    return f


def test_pseudo_label_stages_run_only_when_their_files_are_missing(overrides, tiny_sample,
                                                                    tmp_path, capsys):
    work = tmp_path / "outputs" / "cpu_sample"
    files = needed_files(overrides)
    assert files == [work / "freemask" / "free_masks_train.json",
                     work / "solo" / "pseudo_labels.json"]
    assert main(["check", *overrides]) == 1 and "make pseudo-labels" in capsys.readouterr().out
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    assert main(["check", *overrides]) == 0
    # annotating from the dataset's boxes needs no pseudo-label file but the assistant's
    assert needed_files([*overrides, "annotation.source=gt"]) == files[1:]


@pytest.mark.e2e
def test_the_assistant_is_trained_once_on_the_pseudo_labels_and_a_point_model_wins(
        overrides, tiny_sample, tmp_path):
    work = tmp_path / "outputs" / "cpu_sample"
    f = pseudo_labels(tiny_sample, work)
    served = train_assistant(overrides)
    assert served == work / "assistant_solo_maskrcnn" and (served / "model.pt").is_file()
    cfg = OmegaConf.load(served / "config.yaml")
    assert cfg.supervision.name == "solo" and cfg.supervision.annotations == str(f)
    assert cfg.maskrcnn.eval_splits == []          # nothing read from ground truth
    # a rerun on the same pseudo-labels reuses the weights
    mtime = (served / "model.pt").stat().st_mtime_ns
    assert train_assistant(overrides) == served
    assert (served / "model.pt").stat().st_mtime_ns == mtime
    # other pseudo-labels: the weights are refused, never served as if made from them
    pseudo_labels(tiny_sample, work, keep=1)
    with pytest.raises(UserError, match="made from other inputs"):
        train_assistant(overrides)
    # the ground truth instead of pseudo-labels is refused outright
    with pytest.raises(UserError, match="pseudo-labels only"):
        train_assistant([*overrides, "supervision.annotations=null"])
    # a point model, once there, is what the assistant serves
    points = work / "maskrcnn_points"
    points.mkdir(parents=True)
    (points / "model.pt").write_bytes(b"")
    a = OmegaConf.create({"run_dir": str(points), "pseudo_label_run_dir": str(served)})
    assert assistant_dir(a) == points and train_assistant(overrides) == points
    os.remove(points / "model.pt")
    assert assistant_dir(a) == served
