"""DenseCL: shuffled-BN keys, the InfoNCE loss, the queues' FIFO update, the momentum update."""
import math

import pytest
import torch
import torch.nn.functional as F

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
    c5, g, d, _ = m._keys(x)
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


def test_info_nce_matches_a_hand_computed_value():
    m = _model(1)
    m.t = 0.5
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    # row 0: logits (0.6, 1, -1, 0) / 0.5; row 1: (1, 0, 0, -1) / 0.5
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(2) + math.exp(-2) + math.exp(0))
    row1 = -2.0 + math.log(math.exp(2) + 1 + 1 + math.exp(-2))
    assert m._info_nce(q, k, queue).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_queues_are_first_in_first_out():
    m = _model(1)   # queue of 8
    before = m.queue_g.clone()
    for step in range(3):       # 3 batches of 3 keys: the third wraps around
        g = torch.full((3, 8), float(step + 1))
        m._enqueue(g, -g)
    expect = before.clone()
    expect[0:3], expect[3:6], expect[6:8], expect[0:1] = 1.0, 2.0, 3.0, 3.0
    assert torch.equal(m.queue_g, expect)
    assert torch.equal(m.queue_d[3:6], torch.full((3, 8), -2.0))
    assert int(m.queue_ptr) == 1


@pytest.mark.parametrize("key_bn", ["own", "copy"])
def test_momentum_update(key_bn):
    torch.manual_seed(0)
    m = DenseCL(ResNetFeatures("resnet18"), dim=8, hidden=16, queue_size=8, momentum=0.9,
                key_bn=key_bn).train()
    with torch.no_grad():
        for p in list(m.backbone_q.parameters()) + list(m.heads_q.parameters()):
            p.add_(torch.randn_like(p))
        m.backbone_q(torch.randn(2, 3, 64, 64))       # query BN statistics move
    q = [p.clone() for p in m.backbone_q.parameters()] + [p.clone() for p in m.heads_q.parameters()]
    k = [p.clone() for p in m.backbone_k.parameters()] + [p.clone() for p in m.heads_k.parameters()]
    k_stats = [b.clone() for b in m.backbone_k.buffers()]
    m._momentum_update()
    after = list(m.backbone_k.parameters()) + list(m.heads_k.parameters())
    for a, pk, pq in zip(after, k, q):
        assert torch.allclose(a, 0.9 * pk + 0.1 * pq, atol=1e-6)
    same = [torch.equal(a, b) for a, b in zip(m.backbone_k.buffers(), m.backbone_q.buffers())]
    kept = [torch.equal(a, b) for a, b in zip(m.backbone_k.buffers(), k_stats)]
    # own: the key encoder's BN statistics are its own (MoCo); copy: they follow the query's
    assert all(kept) and not all(same) if key_bn == "own" else all(same) and not all(kept)


def test_dense_queue_key_is_the_pooled_projection_normalised():
    torch.manual_seed(0)
    for mode in ("pooled_projection", "pooled_normalised"):
        m = DenseCL(ResNetFeatures("resnet18"), dim=8, hidden=16, queue_size=8,
                    dense_queue=mode).train()
        x = torch.randn(2, 3, 64, 64)
        m(x, x)
        c5 = m.backbone_k(x)["res5"]  # train mode: BN of this batch, as in _keys (1 group)
        raw = m.heads_k.dense_mlp(c5).flatten(2)
        expect = (F.normalize(raw.mean(2), dim=1) if mode == "pooled_projection"
                  else F.normalize(F.normalize(raw, dim=1).mean(2), dim=1))
        assert torch.allclose(m.queue_d[:2], expect, atol=1e-5)
