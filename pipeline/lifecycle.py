"""The one lifecycle of trained weights, for every stage that trains (pretrain, SOLO's rounds,
the students): fingerprint -> guard -> reuse, or train and save.

A stage declares once which of its settings do *not* change its weights (`NOT_IN_WEIGHTS`,
each with its reason); every other key of its config node enters the fingerprint, so a key
added later invalidates old weights by default instead of leaving them looking valid.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from pipeline import dist
from pipeline.io import save_torch
from pipeline.provenance import guard, settings

log = logging.getLogger(__name__)


def weights_settings(node, not_in_weights: tuple[str, ...] = ()) -> dict:
    """A config node's settings that make its weights: all of them but the engineering keys
    (provenance.ENGINEERING) and the dotted keys of `not_in_weights`."""
    data = settings(node)
    for dotted in not_in_weights:
        *parents, leaf = dotted.split(".")
        d = data
        for p in parents:
            d = d.get(p) if isinstance(d, dict) else None
        if isinstance(d, dict):
            d.pop(leaf, None)
    return data


def fit_or_load(folder, key: str, fit: Callable[[], object], *, save: Callable[[object], dict],
                load: Callable[[Path], object] | None = None, file: str = "model.pt",
                what: str = "weights", on_guarded: Callable[[], None] | None = None):
    """Weights of `folder` made from the inputs fingerprinted as `key`: the finished file when
    it is there (`load(path)`), else `fit()` (which resumes from the folder's last.pt through
    the training loop) and its `save(result)` written by rank 0. Weights or a checkpoint made
    from other inputs are refused in one line before anything is written (provenance.guard).
    on_guarded: what rank 0 writes once the guard passed (e.g. the targets trained on).
    Returns (result, trained): result is load's or fit's."""
    folder = Path(folder)
    final = folder / file
    if dist.is_main():
        guard(folder, key, (file, "last.pt"), what)
        if on_guarded is not None:
            on_guarded()
    if final.is_file():
        log.info("%s already trained: %s (made from these inputs)", what, final)
        return (load(final) if load is not None else None), False
    result = fit()
    if dist.is_main():
        save_torch(final, save(result))
        log.info("wrote %s", final)
    return result, True
