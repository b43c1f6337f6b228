"""DenseCL pretraining: batched device views, made in loader workers or in the training thread."""
import pytest
import torch

from pipeline.__main__ import run_stage

TINY = ["pretrain.max_iter=3", "pretrain.batch_size=4", "pretrain.crop_size=32",
        "pretrain.queue_size=8", "pretrain.hidden=32", "pretrain.log_every=1",
        "dataset.generate.num.train=8"]


@pytest.mark.e2e
@pytest.mark.parametrize("augment", ["batch", "per_image"])
def test_loader_workers_train_the_same_backbone(sample_cfg, augment):
    weights = []
    for workers in (0, 2):
        cfg = sample_cfg("stage=pretrain", *TINY, f"pretrain.augment={augment}",
                         f"hardware.loader_workers={workers}", run_name=f"pre_{workers}")
        run_stage(cfg)
        weights.append(torch.load(f"{cfg.run_dir}/backbone.pt", weights_only=False)["state_dict"])
    a, b = weights
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)
