"""`make gpu-check` (bench/gpu_check.py) times every student, AdaMixer included, with
ResNet-50 on the GPU; its arguments parse with the benchmark's own parser and build a
ResNet-50 AdaMixer that trains a step (here on the CPU, one image)."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # the benchmarks import their `common` helpers

import common  # noqa: E402
import gpu_check  # noqa: E402


def students(dry: bool) -> list[str]:
    return dict(gpu_check.plan(dry))["students"]


@pytest.mark.parametrize("dry", [True, False])
def test_plan_times_the_students_on_the_device(dry):
    cmd = students(dry)
    assert cmd[1] == str(ROOT / "bench" / "sparseinst.py")
    assert cmd[cmd.index("--device") + 1] == ("cpu" if dry else "cuda")
    assert ("backbone.arch=resnet50" in cmd) is not dry


def test_students_benchmark_imports_its_helpers():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_sparseinst",
                                                  ROOT / "bench" / "sparseinst.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # its imports from common resolve
    assert bench.record is common.record and bench.training_precision is common.training_precision


def test_gpu_arguments_build_a_resnet50_adamixer_that_trains(monkeypatch, sample_cfg):
    monkeypatch.setattr(sys, "argv", students(False)[1:])
    args, overrides = common.parse_args()
    assert (args.device, args.iters) == ("cuda", 10)
    cfg = sample_cfg("backbone.weights=null", "supervision.agnostic=true", *overrides)
    assert cfg.backbone.arch == "resnet50"

    from pipeline.data.datasets import get_split
    from pipeline.data.instances import InstanceBank
    from pipeline.models.students import build_student
    torch.manual_seed(0)
    student = build_student(cfg, 1, "adamixer")
    assert student.model.backbone.layer4[-1].conv3.out_channels == 2048  # ResNet-50
    split = get_split(cfg.dataset, "train")
    bank = InstanceBank(split, split.coco, category_map={c["id"]: 0 for c in
                                                          split.coco["categories"]})
    t = cfg.adamixer.train
    loss = student.losses(student.model.train(), bank.batch(0, 1, 0, t.sizes, t.max_size),
                          torch.device("cpu"))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in student.model.backbone.parameters())
