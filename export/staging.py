"""Writing a bundle so that a failed or interrupted export never leaves one that looks valid.

Everything is written into a hidden sibling directory; only a complete bundle (manifest last)
is renamed into place. The exporter holds a lock on its staging directory for its lifetime, so
the next export can tell an abandoned one (its exporter was killed, or the power went) from one
still being written, and removes only the abandoned.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from embedrpc.export.errors import ExportError

LOCK_NAME = ".lock"


def check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} exists and is not empty; pass --force to replace it")


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _replaced(out: Path) -> Path:
    return out.with_name(f".{out.name}.replaced")


def restore_interrupted_publish(out: Path) -> None:
    """A publish killed between its two renames left the previous bundle aside: put it back."""
    if not out.exists() and _replaced(out).is_dir():
        _replaced(out).rename(out)


def remove_abandoned(out: Path) -> list[Path]:
    """Delete staging directories of `out` whose exporter no longer holds their lock."""
    removed = []
    for candidate in out.parent.glob(_partial_prefix(out) + "*"):
        lock_path = candidate / LOCK_NAME
        try:
            handle = open(lock_path, "rb")
        except OSError:
            continue  # no lock yet: its exporter is just starting, or it is not ours
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live export
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


class Staging:
    """A context manager yielding the staging directory; publishes it on success."""

    def __init__(self, out: Path, force: bool):
        self.out = Path(out).resolve()
        self.force = force
        self.path: Path | None = None
        self._lock = None

    def __enter__(self) -> "Staging":
        restore_interrupted_publish(self.out)
        check_destination(self.out, self.force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.out)
        self.path = Path(tempfile.mkdtemp(prefix=_partial_prefix(self.out), dir=self.out.parent))
        # Locked before it gets its name, so no other export ever sees it unlocked.
        unnamed = self.path / (LOCK_NAME + ".new")
        self._lock = open(unnamed, "wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        os.rename(unnamed, self.path / LOCK_NAME)
        return self

    def work_dir(self, name: str) -> Path:
        """Scratch space inside the staging area that is not part of the bundle."""
        path = self.path / ".work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self) -> Path:
        shutil.rmtree(self.path / ".work", ignore_errors=True)
        (self.path / LOCK_NAME).unlink()
        previous = None
        if self.out.exists():
            check_destination(self.out, self.force)
            previous = _replaced(self.out)
            shutil.rmtree(previous, ignore_errors=True)
            self.out.rename(previous)
        self.path.rename(self.out)
        self.path = None
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
