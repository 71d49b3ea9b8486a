"""Writing a bundle so that a failed or interrupted export never leaves one that looks valid.

Everything is written into a hidden sibling directory; only a complete bundle (manifest last)
is renamed into place.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from embedrpc.export.checkpoint import ExportError


def check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} exists and is not empty; pass --force to replace it")


class Staging:
    """A context manager yielding the staging directory; publishes it on success."""

    def __init__(self, out: Path, force: bool):
        self.out = Path(out).resolve()
        self.force = force
        self.path: Path | None = None

    def __enter__(self) -> "Staging":
        check_destination(self.out, self.force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self

    def work_dir(self, name: str) -> Path:
        """Scratch space inside the staging area that is not part of the bundle."""
        path = self.path / ".work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self) -> Path:
        shutil.rmtree(self.path / ".work", ignore_errors=True)
        previous = None
        if self.out.exists():
            check_destination(self.out, self.force)
            previous = self.out.with_name(f".{self.out.name}.replaced")
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
