"""Config node -> settings dataclass: the one way models read their numbers from the config."""
from __future__ import annotations

from dataclasses import fields


def dataclass_from(cls, node, **extra):
    """`cls` from the node's keys named like its fields (the others keep their defaults);
    a list becomes a tuple of the default's element type where the field's default is a
    tuple; `extra` overrides."""
    kw = {}
    for f in fields(cls):
        if node is not None and f.name in node:
            v = node[f.name]
            if isinstance(f.default, tuple) and f.default and not isinstance(v, (str, bytes)):
                v = tuple(type(f.default[0])(x) for x in v)
            kw[f.name] = v
    kw.update(extra)
    return cls(**kw)
