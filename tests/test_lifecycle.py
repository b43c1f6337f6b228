"""The one lifecycle of trained weights (pipeline/lifecycle.py): declared fingerprints, reuse,
refusal; and, for every stage that trains, that each setting of its config node changes the
weights' fingerprint unless the stage declares it in NOT_IN_WEIGHTS."""
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.data.datasets import Split
from pipeline.errors import UserError
from pipeline.lifecycle import fit_or_load, weights_settings
from pipeline.provenance import ENGINEERING
from tests.conftest import make_cfg


def test_weights_settings_drop_declared_and_engineering_keys():
    node = OmegaConf.create({"lr": 0.1, "log_every": 5, "inference": {"k": 1},
                             "train": {"init": "a.pt", "max_iter": 3}})
    assert weights_settings(node, ("inference", "train.init", "no.such")) == \
        {"lr": 0.1, "train": {"max_iter": 3}}


def test_fit_or_load_trains_once_reuses_and_refuses_other_inputs(tmp_path):
    calls = []

    def fit():
        calls.append(1)
        return torch.nn.Linear(2, 1)

    def save(m):
        return m.state_dict()

    made, trained = fit_or_load(tmp_path, "key-a", fit, save=save, load=torch.load)
    assert trained and calls == [1] and (tmp_path / "model.pt").is_file()
    again, trained = fit_or_load(tmp_path, "key-a", fit, save=save, load=torch.load)
    assert not trained and calls == [1]
    assert torch.equal(again["weight"], made.weight.detach())
    with pytest.raises(UserError, match="model.pt holds weights made from other inputs"):
        fit_or_load(tmp_path, "key-b", fit, save=save, load=torch.load)
    assert calls == [1]


def _leaves(node, prefix=""):
    """(dotted key, value) of every leaf of a plain config tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if value else [1]
    return 1


def _split(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}]
    (tmp_path / "imgs").mkdir(exist_ok=True)
    (tmp_path / "imgs" / "a.png").write_bytes(b"one")
    mask = torch.zeros(40, 40, dtype=torch.bool)
    mask[:10, :10] = True
    targets = make_coco(images, [mask_to_annotation(mask.numpy(), 1, score=0.9)])
    return Split("train", tmp_path / "imgs", {"images": images, "annotations": []}, False), \
        targets


def _solo(cfg, split, targets):
    from pipeline.stages.solo import NOT_IN_WEIGHTS, round_fingerprint
    return "solo", NOT_IN_WEIGHTS, round_fingerprint(cfg, 1, targets, None, split)


def _pretrain(cfg, split, targets):
    from pipeline.stages.pretrain import NOT_IN_WEIGHTS, backbone_fingerprint
    return "pretrain", NOT_IN_WEIGHTS, backbone_fingerprint(cfg, split)


def _student(model, *overrides):
    def key(cfg, split, targets):
        from pipeline.stages.student import not_in_weights, weights_fingerprint
        return model, not_in_weights(cfg[model]), weights_fingerprint(cfg, split, targets)
    key.overrides = [f"model={model}", *overrides]
    return key


STAGES = {"solo": _solo, "pretrain": _pretrain,
          **{m: _student(m) for m in ("maskrcnn", "sparseinst", "adamixer")},
          # the refiner's own keys reach the fingerprint only when it is on
          "maskrcnn_transfiner": _student("maskrcnn", "maskrcnn.refine=transfiner")}


@pytest.mark.parametrize("experiment", ["cpu_sample", "coco_r50"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_setting_reaches_the_weights_fingerprint_or_is_declared(tmp_path, stage,
                                                                       experiment):
    """A key added later cannot leave old weights looking valid: each key of the stage's node
    either changes the fingerprint or is named in the stage's NOT_IN_WEIGHTS."""
    key_of = STAGES[stage]
    extra = getattr(key_of, "overrides", [])
    cfg = make_cfg(tmp_path, "backbone.weights=null", f"experiment={experiment}", *extra)
    split, targets = _split(tmp_path)
    node, declared, key = key_of(cfg, split, targets)
    assert key == key_of(cfg, split, targets)[2]
    missed = []
    for name, value in _leaves(OmegaConf.to_container(cfg[node], resolve=True)):
        if any(name == d or name.startswith(d + ".") for d in declared) or \
                name.split(".")[-1] in ENGINEERING:
            continue
        changed = cfg.copy()
        with open_dict(changed):
            OmegaConf.update(changed, f"{node}.{name}", _perturbed(value), merge=False)
        if key_of(changed, split, targets)[2] == key:
            missed.append(name)
    assert not missed, f"{node} keys that change no weights fingerprint: {missed}"
