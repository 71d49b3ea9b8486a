"""File checksums, remembered by file identity so a start does not re-read gigabytes.

A bundle's files are checked against its manifest's sha256 on every start. Reading a 1 GB
artifact costs seconds; so the first check records each file's digest with its identity (device,
inode, size, modification and change times in nanoseconds) in `hashes.json` under the cache
directory, and a later check whose file still has that identity takes the recorded digest.
Any write to a file, a copy, a move onto it or `touch` changes its change time (which no
user can set back), so a changed file is always read again.

What this guards against: corrupt, partial or swapped files. It does not stand against
someone who can write both the bundle and this cache; serve from a read-only bundle for that.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from embedrpc.service.bundle.layout import sha256_file

log = logging.getLogger("embedrpc.filehashes")
FILE_NAME = "hashes.json"
MAX_ENTRIES = 512  # oldest entries beyond this are dropped


def identity(path: Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


class FileHashes:
    """sha256 of files, cached by identity in `directory/hashes.json` (None: never cached)."""

    def __init__(self, directory: Path | None):
        self.path = Path(directory) / FILE_NAME if directory else None
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        before = identity(path)
        entries = self._load()
        remembered = entries.get(str(path))
        if remembered and remembered.get("identity") == before:
            return remembered["sha256"]
        digest = sha256_file(path)
        if identity(path) == before:  # unchanged while it was read
            self._store(str(path), {"identity": before, "sha256": digest})
        return digest

    def _load(self) -> dict:
        if self.path is None:
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _store(self, key: str, entry: dict) -> None:
        if self.path is None:
            return
        with self._lock:
            entries = self._load()
            entries.pop(key, None)
            entries[key] = entry
            kept = dict(list(entries.items())[-MAX_ENTRIES:])
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                scratch = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
                scratch.write_text(json.dumps(kept))
                os.replace(scratch, self.path)
            except OSError as exc:
                log.warning("cannot remember file checksums in %s: %s", self.path, exc)


UNCACHED = FileHashes(None)
