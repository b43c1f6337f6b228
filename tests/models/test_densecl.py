"""DenseCL's key encoder with shuffled BN: outputs come back in the images' order."""
import torch

from pipeline.models.backbone import ResNetFeatures
from pipeline.models.densecl import DenseCL


def _model(groups):
    torch.manual_seed(0)
    m = DenseCL(ResNetFeatures("resnet18"), dim=8, hidden=16, queue_size=8,
                shuffle_groups=groups)
    return m.train()


def test_shuffled_keys_come_back_in_order():
    x = torch.randn(4, 3, 64, 64)
    m = _model(4)  # every image its own group: its key equals the image alone through BN
    c5, g, d = m._keys(x)
    for i in range(4):
        c5_i = m.backbone_k(x[i:i + 1])["res5"]
        assert torch.allclose(c5[i], c5_i[0], atol=1e-5)
        assert torch.allclose(g[i], m.heads_k(c5_i)[0][0], atol=1e-5)
    one = _model(1)  # one group: the whole batch's statistics, order unchanged
    c5_all = one.backbone_k(x)["res5"]
    assert torch.allclose(one._keys(x)[0], c5_all, atol=1e-5)


def test_groups_change_the_statistics_keys_see():
    x = torch.randn(4, 3, 64, 64)
    assert not torch.allclose(_model(2)._keys(x)[1], _model(1)._keys(x)[1], atol=1e-4)
