"""What made an artefact, so nothing made from other inputs is ever reported as new.

Every reusable artefact (a prediction shard, a trained model, a pretrained backbone) is
written with a fingerprint of what it was made from: the resolved settings that change it,
the identity of its input files and images (a hash of their bytes, `pipeline/identity.py`)
and the fingerprints of the artefacts upstream. A rerun reuses it only when the fingerprint matches;
otherwise cheap artefacts are recomputed and trained weights are refused in one line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.identity import content_hash, content_hashes
from pipeline.io import read_json, write_json

STAMP = "inputs.json"
# settings that change how an artefact is made, never what it holds
ENGINEERING = ("log_every", "ckpt_every", "overwrite", "cache_images", "workers",
               "keep_checkpoints")
# ... and, for per-image predictions only, how images are grouped (outputs are per image)
# and how many are timed for the speed column
BATCHING = ENGINEERING + ("batch_size", "shard_size", "splits", "speed_images")


def fingerprint(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def settings(node, drop=ENGINEERING):
    """A config node as plain data, without the keys that do not change the result."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if isinstance(
        node, (DictConfig, ListConfig)) else node

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(data)


def file_identity(path) -> list | None:
    """["sha1", size, hash of the content], or None when no file is configured; a configured
    file that is missing is its own identity. By content, whatever its size (a checkpoint or
    COCO file replaced by another with the same size and mtime is another input), hashed
    once per file version (`pipeline/identity.py`)."""
    if not path:
        return None
    p = Path(str(path))
    if not p.is_file():
        return ["missing", str(p)]
    return ["sha1", p.stat().st_size, content_hash(p)]


def image_identities(root, infos) -> list:
    """One entry per image: id, file name and a hash of the file's bytes (cached by path, size,
    mtime, inode and ctime: `pipeline/identity.py`). By content, not by folder or mtime: an
    image replaced by another of the same size and mtime differs, a folder copied elsewhere
    with the same bytes is the same input."""
    root = Path(root)
    hashes = content_hashes([root / im["file_name"] for im in infos])
    return [[im["id"], im["file_name"], h] for im, h in zip(infos, hashes)]


def stamp_of(folder) -> str | None:
    f = Path(folder) / STAMP
    return read_json(f).get("fingerprint") if f.is_file() else None


def guard(folder, key: str, artefacts=("model.pt", "last.pt"), what: str = "weights") -> None:
    """A folder holds artefacts of one set of inputs: stamp it when it holds none yet, and
    refuse in one line to reuse or resume artefacts made from other inputs (before the run
    has written anything into the run folder: `pipeline/attempts.py`)."""
    folder = Path(folder)
    from pipeline import attempts
    made = [a for a in artefacts if (folder / a).is_file()]
    if made and stamp_of(folder) != key:
        raise UserError(f"{folder / made[0]} holds {what} made from other inputs (settings, data "
                        f"or upstream files changed since); delete {folder} to redo it, or give "
                        f"this run another run_name")
    attempts.guards_passed()  # from here on this run's files may enter the folder
    if not made:
        write_json(folder / STAMP, {"fingerprint": key})
