"""Atomic file writes: a reader (or a killed run) never sees a half-written output."""
from __future__ import annotations

import errno
import gc
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give: outputs readable like any other file


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Write through a temp file unique to this call, then rename: readers and concurrent
    writers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left in {path.parent} while writing {path.name}; free "
                            f"space and rerun (finished work is kept)") from None
        raise
    return path


def write_with(path, save: Callable[[Any], None]) -> Path:
    """Atomic binary write by any saver taking a file object (PIL, matplotlib, numpy)."""
    return _atomic(path, save, "wb")


def write_json(path, obj: Any, indent: int | None = None) -> Path:
    return _atomic(path, lambda f: json.dump(obj, f, indent=indent), "w")


def write_text(path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def save_torch(path, obj: Any) -> Path:
    import torch

    return _atomic(path, lambda f: torch.save(obj, f), "wb")


@contextmanager
def paused_gc():
    """The cyclic GC off while millions of JSON objects are built: they hold no cycles, and
    its passes over them cost more than the parse on COCO-size files."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_json(path, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path} (check the path in the config)")
    try:
        with open(path) as f, paused_gc():
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}): "
                        f"{e.msg}; fix or regenerate the file") from None
