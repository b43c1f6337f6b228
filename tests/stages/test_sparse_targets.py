"""Students trained on sparse, noisy pseudo-labels (most images without any, tiny masks, a
handful of targets: the shape of SOLO's output on images it finds few objects in) train to a
finite loss, or stop with one line saying why."""
import csv
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.__main__ import run_stage
from pipeline.data.coco import load_coco, mask_to_annotation, save_coco
from tests.conftest import ROOT, cli_env, pipeline_cmd

pytestmark = pytest.mark.e2e


def sparse_pseudo_labels(tiny_sample, path) -> Path:
    """8 training images: 2 with one real object mask, 2 with one mask of 1 or 4 pixels,
    4 with nothing."""
    gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
    anns = [dict(next(a for a in gt["annotations"] if a["image_id"] == i), category_id=1,
                 score=0.95) for i in (1, 2)]
    for i, side in ((3, 1), (4, 2)):
        m = np.zeros((160, 160), bool)
        m[80:80 + side, 40:40 + side] = True
        anns.append(mask_to_annotation(m, i, 1, score=0.91))
    for k, a in enumerate(anns, 1):
        a["id"] = k
    save_coco(path, dict(gt, annotations=anns, categories=[{"id": 1, "name": "object"}]))
    return path


@pytest.mark.parametrize("model", ["maskrcnn", "sparseinst"])
def test_sparse_tiny_pseudo_labels_train_to_a_finite_loss(sample_cfg, tiny_sample, tmp_path,
                                                          model):
    labels = sparse_pseudo_labels(tiny_sample, tmp_path / "sparse.json")
    cfg = sample_cfg("stage=student", f"model={model}", "supervision=solo",
                     f"supervision.annotations={labels}", "backbone.weights=null",
                     f"{model}.train.max_iter=6", f"{model}.train.batch_size=2",
                     f"{model}.train.log_every=1", f"{model}.eval_splits=[]",
                     ("+" if model == "maskrcnn" else "") + f"{model}.inference.speed_images=1",
                     "overlays=0", run_name=model)
    run_stage(cfg)
    rows = list(csv.DictReader(open(Path(cfg.run_dir) / "metrics.csv")))
    assert len(rows) == 6 and all(math.isfinite(float(r["loss"])) for r in rows)


def test_a_diverging_student_stops_with_one_line(tiny_sample, tmp_path):
    """A learning rate that makes the loss explode: one line naming the fix, exit code 2,
    no traceback."""
    labels = sparse_pseudo_labels(tiny_sample, tmp_path / "sparse.json")
    r = subprocess.run(pipeline_cmd(
        "stage=maskrcnn", "supervision=solo", f"supervision.annotations={labels}",
        f"paths.data_dir={tiny_sample}", f"paths.output_dir={tmp_path / 'out'}",
        "dataset.generate.num.train=8", "dataset.generate.num.val=4",
        "dataset.generate.num.test=4", "backbone.weights=null", "maskrcnn.train.lr=1e12",
        "maskrcnn.train.warmup_iter=0", "maskrcnn.train.max_iter=40",
        "maskrcnn.train.batch_size=2", "maskrcnn.eval_splits=[]", "overlays=0"),
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "in a row; training stopped" in err[0] and "train.lr" in err[0]
