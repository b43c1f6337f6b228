"""Atomic file writes: a reader (or a killed run) never sees a half-written output."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import UserError


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj: Any, indent: int | None = None) -> Path:
    return _atomic(path, lambda f: json.dump(obj, f, indent=indent), "w")


def write_text(path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def save_torch(path, obj: Any) -> Path:
    import torch

    return _atomic(path, lambda f: torch.save(obj, f), "wb")


def read_json(path, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path} (check the path in the config)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}): "
                        f"{e.msg}; fix or regenerate the file") from None
