"""What an image *is*: a hash of its bytes, so an image replaced by another of the same size
and modification time (`cp -p`, rsync, tar of same-size files such as uncompressed TIFF/BMP
from one camera) is never taken for the old one.

Hashing is cheap next to decoding (sha1, ~1.8 GB/s on one core here), and it is done once per
file version: each hash is cached under the file's resolved path together with its size,
mtime, inode and ctime. A file whose five values are unchanged is not read again; any write,
rename over it, `touch` or metadata restore changes its ctime (which no user call can set back),
so a swapped file is always read again. The cache lives in memory for the process and, when a
stage names one (`paths.cache_dir`), in `image_hashes.json` there across runs; a lost or broken
cache file only costs re-reading the images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_NAME = "image_hashes.json"
_lock = threading.Lock()
_memory: dict[str, list] = {}     # resolved path -> [size, mtime_ns, ino, ctime_ns, sha1]
_store: Path | None = None        # the cache file of this process, if any
_loaded: set[Path] = set()
_new = 0                          # hashes made since the cache file was last written


def use_cache_dir(folder) -> None:
    """Keep hashes in `folder/image_hashes.json` across runs (None: in memory only)."""
    global _store
    _store = Path(folder) / CACHE_NAME if folder else None
    if _store is not None and _store not in _loaded:
        _loaded.add(_store)
        try:
            with open(_store) as f:
                data = json.load(f)
            if isinstance(data, dict):
                with _lock:
                    for k, v in data.items():
                        if isinstance(v, list) and len(v) == 5:
                            _memory.setdefault(k, v)
        except (OSError, ValueError):
            pass  # no cache yet, or a broken one: the images are read again


def _stat_key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(path) -> str:
    """sha1 of the file's bytes, read only when size, mtime, inode or ctime changed since the
    last hash of that path. Raises OSError for a file that cannot be read."""
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    with _lock:
        hit = _memory.get(key)
    if hit is not None and hit[:4] == _stat_key(st):
        return hit[4]
    digest = _sha1(p)
    after = p.stat()
    if _stat_key(after) != _stat_key(st):  # written while read: hash it again next time
        return digest
    global _new
    with _lock:
        _memory[key] = [*_stat_key(st), digest]
        _new += 1
    return digest


def content_hashes(paths, workers: int = 4) -> list[str | None]:
    """`content_hash` of each path (None where the file cannot be read: missing, a folder,
    no permission), then the cache file updated once if anything new was hashed."""
    paths = list(paths)

    def one(p):
        try:
            return content_hash(p)
        except OSError as e:
            return f"unreadable: {type(e).__name__}"
    if len(paths) > 8 and workers > 1:  # hashlib releases the GIL on large blocks
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(one, paths))
    else:
        out = [one(p) for p in paths]
    if _store is not None and _new:
        save()
    return out


def save() -> None:
    """Write the cache file atomically (concurrent runs: the last writer wins; an entry lost
    that way is hashed again)."""
    if _store is None:
        return
    from pipeline.io import write_json
    global _new
    with _lock:
        data, _new = dict(_memory), 0
    try:
        write_json(_store, data)
    except Exception as e:  # noqa: BLE001 - a cache that cannot be written is only slower
        log.debug("image hash cache not written (%s)", e)
