"""Each run of a stage in a folder is an attempt, recorded in `attempts/NNNN.json`, so a table
never reports a folder's old result after its last attempt failed or was refused.

An attempt writes nothing of its own into the folder (no `config.yaml`, no error file, no
points file, no log lines) until it holds the folder's lock (`pipeline/lock.py`) and its
guards pass: for a stage that trains (`GUARDED = True` in its module) that is the moment its
first `provenance.guard` accepts the folder; for the others, at once. Until then its log lines
are held in memory. An attempt refused before that point leaves the folder's files as they
were and records only its status file (`status: refused`, with the one-line reason); one that
fails later writes `error.txt` too (`status: failed`); a finished one `status: ok`, and
`metrics.json` names it (`"attempt": n`). An attempt killed with -9 stays `running` with the
pid of a process that is gone. `stage=compare` reads the last attempt.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.errors import describe

log = logging.getLogger(__name__)
FOLDER = "attempts"
_current: "Attempt | None" = None


def _write(path: Path, write, what: str) -> bool:
    """A write that must not hide the error being reported (a full disk, a read-only folder):
    failures are logged to the console, not raised."""
    try:
        write()
        return True
    except Exception as e:  # noqa: BLE001
        print(f"warning: could not write {path} ({describe(e)})", file=sys.stderr)
        return False


def attempts_of(folder) -> list[dict]:
    """The folder's attempt records, oldest first (unreadable ones skipped)."""
    from pipeline.io import read_json
    out = []
    for f in sorted((Path(folder) / FOLDER).glob("*.json")):
        try:
            rec = read_json(f)
        except Exception:  # noqa: BLE001 - a half-written record of a killed run
            continue
        if isinstance(rec, dict) and isinstance(rec.get("attempt"), int):
            out.append(rec)
    return sorted(out, key=lambda r: r["attempt"])


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def last_status(folder) -> dict | None:
    """The last attempt of `folder`: its record, with `status` "killed" for a `running` one
    whose process is gone (on this host). None when the folder has no record."""
    recs = attempts_of(folder)
    if not recs:
        return None
    rec = dict(recs[-1])
    if rec.get("status") == "running" and rec.get("host") == socket.gethostname() \
            and not _alive(rec.get("pid")):
        rec["status"] = "killed"
    return rec


class Attempt:
    def __init__(self, cfg, guarded: bool):
        self.cfg, self.folder = cfg, Path(cfg.run_dir)
        done = attempts_of(self.folder)
        existing = [int(p.stem) for p in (self.folder / FOLDER).glob("*.json")
                    if p.stem.isdigit()]
        self.n = max([r["attempt"] for r in done] + existing + [0]) + 1
        self.committed = False
        self.record = {"attempt": self.n, "stage": str(cfg.stage), "pid": os.getpid(),
                       "host": socket.gethostname(), "command": " ".join(sys.argv),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._held: list[tuple[logging.Handler, logging.handlers.MemoryHandler]] = []
        if guarded:
            self._hold_logs()

    @property
    def path(self) -> Path:
        return self.folder / FOLDER / f"{self.n:04d}.json"

    def _hold_logs(self) -> None:
        """Log files inside the folder (Hydra's) get this attempt's lines only once it is
        committed: a refused attempt leaves no line in the holder's log."""
        root = logging.getLogger()
        for h in list(root.handlers):
            f = getattr(h, "baseFilename", None)
            if f and Path(f).resolve().is_relative_to(self.folder.resolve()):
                mem = logging.handlers.MemoryHandler(10 ** 6, logging.CRITICAL + 10, h,
                                                     flushOnClose=False)
                mem.setLevel(h.level)
                mem.setFormatter(h.formatter)
                root.removeHandler(h)
                root.addHandler(mem)
                self._held.append((h, mem))

    def _release_logs(self, keep: bool) -> None:
        root = logging.getLogger()
        for h, mem in self._held:
            if keep:
                mem.flush()
            else:
                mem.buffer.clear()
            root.removeHandler(mem)
            root.addHandler(h)
        self._held = []

    def _save(self, **extra) -> None:
        from pipeline.io import write_json
        self.record.update(extra)
        _write(self.path, lambda: write_json(self.path, self.record, indent=2), "attempt")

    def commit(self) -> None:
        """The guards passed: from here on the attempt owns the folder's files."""
        if self.committed:
            return
        self.committed = True
        from pipeline.io import write_text
        (self.folder / "error.txt").unlink(missing_ok=True)
        # Hydra's .hydra/config.yaml is rewritten by any run that starts in this folder, even
        # one refused at once: this copy is the committed attempt's
        cfg_file = self.folder / "config.yaml"
        _write(cfg_file, lambda: write_text(cfg_file, OmegaConf.to_yaml(self.cfg)), "config")
        self._release_logs(keep=True)
        self._save(status="running")

    def finish(self, error: BaseException | None) -> None:
        from pipeline.io import read_json, write_json, write_text
        ended = time.strftime("%Y-%m-%d %H:%M:%S")
        if error is None:
            self.commit()
            metrics = self.folder / "metrics.json"
            if metrics.is_file():
                def stamp():
                    data = read_json(metrics)
                    data["attempt"] = self.n
                    write_json(metrics, data, indent=2)
                _write(metrics, stamp, "metrics")
            self._save(status="ok", finished=ended)
            return
        reason = describe(error)
        try:
            error.weakseg_recorded = True
        except AttributeError:
            pass
        if self.committed:
            err = self.folder / "error.txt"
            _write(err, lambda: write_text(err, reason + "\n"), "error")
            self._save(status="failed", finished=ended, error=reason)
        else:
            self._release_logs(keep=False)
            try:
                error.weakseg_refused = True  # the CLI prints it; no log line in the folder
            except AttributeError:
                pass
            self._save(status="refused", finished=ended, error=reason)


@contextmanager
def attempt(cfg, guarded: bool):
    global _current
    a = Attempt(cfg, guarded)
    if not guarded:
        a.commit()
    _current = a
    try:
        yield a
    except BaseException as e:
        a.finish(e)
        raise
    else:
        a.finish(None)
    finally:
        _current = None
        a._release_logs(keep=a.committed)


def guards_passed() -> None:
    """Called by `provenance.guard` when a folder's artefacts may be made or reused."""
    if _current is not None:
        _current.commit()


def record_refusal(cfg, error: BaseException) -> None:
    """An error raised before the attempt began (a setting out of range) in a folder that
    exists (a sweep job's): recorded as a refused attempt, under the lock, when the folder is
    free; never into a folder another run holds."""
    from pipeline.lock import FolderInUse, folder_lock
    if getattr(error, "weakseg_recorded", False) or isinstance(error, FolderInUse) \
            or not Path(cfg.run_dir).is_dir():
        return
    try:
        with folder_lock(cfg.run_dir):
            a = Attempt(cfg, guarded=False)
            a.finish(error)
    except FolderInUse:
        pass
    except Exception as e:  # noqa: BLE001 - the original error is the one to report
        print(f"warning: could not record the refusal in {cfg.run_dir} ({describe(e)})",
              file=sys.stderr)
