import pytest
import torch
import torchvision

from pipeline.errors import UserError
from pipeline.models.backbone import ResNetFeatures, load_backbone_weights, map_checkpoint_keys


def reference_state(arch="resnet18"):
    torch.manual_seed(3)
    return getattr(torchvision.models, arch)(weights=None).state_dict()


def assert_loaded(model, ref):
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_torchvision_state_dict_with_fc(tmp_path):
    ref = reference_state()
    torch.save(ref, tmp_path / "tv.pth")
    m = ResNetFeatures("resnet18")
    report = load_backbone_weights(m, tmp_path / "tv.pth")
    assert_loaded(m, ref)
    assert report["dropped"] == 2  # fc.weight, fc.bias


def test_moco_densecl_prefixes(tmp_path):
    ref = reference_state()
    ck = {"state_dict": {f"module.encoder_q.{k}": v for k, v in ref.items()}}
    ck["state_dict"].update({"module.encoder_k.conv1.weight": torch.zeros(1),
                             "module.queue": torch.zeros(3),
                             "module.encoder_q.fc.0.weight": torch.zeros(2)})
    torch.save(ck, tmp_path / "moco.pth.tar")
    m = ResNetFeatures("resnet18")
    load_backbone_weights(m, tmp_path / "moco.pth.tar")
    assert_loaded(m, ref)


def test_key_mapping_strips_stacked_prefixes():
    mapped, dropped = map_checkpoint_keys({"module.backbone.layer1.0.conv1.weight": 1,
                                           "module.encoder_k.layer1.0.conv1.weight": 2,
                                           "neck.mlp.weight": 3})
    assert mapped == {"layer1.0.conv1.weight": 1}
    assert len(dropped) == 2


def test_wrong_arch_lists_missing_and_unexpected(tmp_path):
    torch.save(reference_state("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(UserError, match=r"missing keys \[.*unexpected keys \[.*r50.pth|"
                                        r"r50.pth.*missing keys"):
        load_backbone_weights(ResNetFeatures("resnet18"), tmp_path / "r50.pth")


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not found.*backbone.weights"):
        load_backbone_weights(ResNetFeatures("resnet18"), tmp_path / "none.pth")
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read backbone checkpoint"):
        load_backbone_weights(ResNetFeatures("resnet18"), tmp_path / "bad.pth")


def test_feature_strides():
    out = ResNetFeatures("resnet18")(torch.zeros(1, 3, 64, 96))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_raw_densecl_checkpoint_loads(tmp_path):
    """OpenSelfSup/DenseCL training checkpoints: encoder_q = Sequential(backbone, neck)."""
    net = torchvision.models.resnet18(weights=None)
    state = {f"encoder_q.0.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({"encoder_q.1.mlp.0.weight": torch.zeros(8, 512),
                  "encoder_k.0.conv1.weight": torch.zeros(64, 3, 7, 7), "queue": torch.zeros(8, 4)})
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "densecl_raw.pth")
    m = ResNetFeatures("resnet18")
    rep = load_backbone_weights(m, tmp_path / "densecl_raw.pth")
    assert rep["dropped"] == 3
    assert torch.equal(m.conv1.weight, net.conv1.weight)


def test_frozen_bn_statistics_do_not_move_in_a_training_step():
    from omegaconf import OmegaConf
    from pipeline.models.backbone import build_backbone
    m = build_backbone(OmegaConf.create({"arch": "resnet18", "norm": "frozen_bn",
                                         "weights": None, "seed": 0}))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    loss = m(torch.randn(2, 3, 64, 64) * 3 + 1)["res5"].square().mean()
    loss.backward()
    opt.step()
    after = m.state_dict()
    bn = [k for k in before if "bn" in k or "downsample.1" in k]
    assert bn and all(torch.equal(before[k], after[k]) for k in bn)   # stats and affine fixed
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # convs do train
    plain = build_backbone(OmegaConf.create({"arch": "resnet18", "norm": "bn", "weights": None,
                                             "seed": 0}))
    plain(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(plain.bn1.running_mean, before["bn1.running_mean"])  # bn: they do


def test_features_up_to_a_level_equal_the_full_pass():
    """The free masks read one level: the stages after it are skipped, the levels before it
    are the full pass's own values."""
    torch.manual_seed(0)
    net = ResNetFeatures("resnet18").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full, part = net(x), net(x, up_to="res4")
    assert list(part) == ["res2", "res3", "res4"]
    for k in part:
        assert torch.equal(part[k], full[k])
