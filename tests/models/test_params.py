"""One way from a config node to a settings dataclass."""
from dataclasses import dataclass

from omegaconf import OmegaConf

from pipeline.models.params import dataclass_from


@dataclass
class P:
    lr: float = 0.1
    sizes: tuple = (28, 56)
    scales: tuple = (1.0, 0.5)
    name: str = "a"


def test_named_keys_fill_fields_others_keep_defaults_unknown_keys_ignored():
    p = dataclass_from(P, OmegaConf.create({"lr": 0.5, "other": 3}))
    assert p == P(lr=0.5)


def test_lists_become_tuples_of_the_defaults_element_type():
    p = dataclass_from(P, OmegaConf.create({"sizes": [14.0, 28.0], "scales": [1, 2]}))
    assert p.sizes == (14, 28) and all(type(s) is int for s in p.sizes)
    assert p.scales == (1.0, 2.0) and all(type(s) is float for s in p.scales)


def test_extra_overrides_the_node():
    assert dataclass_from(P, OmegaConf.create({"lr": 0.5}), lr=0.2, name="b") == P(lr=0.2,
                                                                                 name="b")
