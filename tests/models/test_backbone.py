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
