"""What made an artefact, so nothing made from other inputs is ever reported as new.

Every reusable artefact (a prediction shard, a trained model, a pretrained backbone) is
written with a fingerprint of what it was made from: the resolved settings that change it,
the identity of its input files (path, size, mtime, a content hash where cheap) and the
fingerprints of the artefacts upstream. A rerun reuses it only when the fingerprint matches;
otherwise cheap artefacts are recomputed and trained weights are refused in one line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import read_json, write_json

HASH_LIMIT = 256 << 20  # files up to this size are identified by content too (sha1: ~0.3 s)
STAMP = "inputs.json"
# settings that change how an artefact is made, never what it holds
ENGINEERING = ("log_every", "ckpt_every", "overwrite", "cache_images", "workers")
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
    """[resolved path, size, mtime_ns, sha1 of the content (small files)], or None when no
    file is configured; a configured file that is missing is its own identity."""
    if not path:
        return None
    p = Path(str(path))
    if not p.is_file():
        return ["missing", str(p)]
    st = p.stat()
    ident = [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if st.st_size <= HASH_LIMIT:
        h = hashlib.sha1()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        ident.append(h.hexdigest())
    return ident


def image_identities(root, infos) -> list:
    """One entry per image: id, file name, size and mtime of the file under `root` (resolved,
    so two folders with the same file names differ; a file repaired in place differs)."""
    root = Path(root).resolve()
    out = []
    for im in infos:
        try:
            st = (root / im["file_name"]).stat()
            out.append([im["id"], im["file_name"], st.st_size, st.st_mtime_ns])
        except OSError as e:
            out.append([im["id"], im["file_name"], type(e).__name__])
    return [str(root), out]


def stamp_of(folder) -> str | None:
    f = Path(folder) / STAMP
    return read_json(f).get("fingerprint") if f.is_file() else None


def guard(folder, key: str, artefacts=("model.pt", "last.pt"), what: str = "weights") -> None:
    """A folder holds artefacts of one set of inputs: stamp it when it holds none yet, and
    refuse in one line to reuse or resume artefacts made from other inputs."""
    folder = Path(folder)
    made = [a for a in artefacts if (folder / a).is_file()]
    if not made:
        write_json(folder / STAMP, {"fingerprint": key})
    elif stamp_of(folder) != key:
        raise UserError(f"{folder / made[0]} holds {what} made from other inputs (settings, data "
                        f"or upstream files changed since); delete {folder} to redo it, or give "
                        f"this run another run_name")
