"""Losses run in float32 while the network runs in reduced precision (hardware.amp)."""
import torch

from pipeline.models.densecl import DenseCL
from pipeline.models.backbone import ResNetFeatures
from pipeline.ops.precision import full_precision, to_float32


def test_to_float32_converts_floating_tensors_in_any_nest_and_nothing_else():
    tree = {"a": [torch.ones(2, dtype=torch.bfloat16), (torch.ones(1, dtype=torch.float16),)],
            "n": torch.ones(2, dtype=torch.long), "s": "text"}
    out = to_float32(tree)
    assert out["a"][0].dtype == torch.float32 and out["a"][1][0].dtype == torch.float32
    assert isinstance(out["a"][1], tuple)
    assert out["n"].dtype == torch.long and out["s"] == "text"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with full_precision(torch.device("cpu")):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_densecl_under_bfloat16_autocast_keeps_its_loss_and_queue_in_float32():
    torch.manual_seed(0)
    model = DenseCL(ResNetFeatures("resnet18"), dim=16, hidden=32, queue_size=8)
    views = torch.randn(2, 4, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(views[0], views[1])
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert model.queue_g.dtype == torch.float32 and model.queue_d.dtype == torch.float32
    out["loss"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
