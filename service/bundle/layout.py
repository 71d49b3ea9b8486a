"""Where everything lives inside a bundle directory: the one module that knows the layout.

    manifest.json            the contract (service/bundle/manifest.py)
    tokenizer.json           the checkpoint's tokenizer (plus tokenizer_config.json etc.)
    <artifacts>              where service/bundle/formats.py places each format
    parity/probes.json       probe texts and prompt names
    parity/oracle.npy        sentence-transformers vectors for the probes
    parity/report.txt        the parity table
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
PROBES = "parity/probes.json"
ORACLE = "parity/oracle.npy"
TASK_ORACLE = "parity/oracle-{task}.npy"  # a bundle with run-time task adapters: one per task
REPORT = "parity/report.txt"


def oracle_file(task: str | None) -> str:
    """The oracle's vectors for a task's probes (None: a bundle of one merged task)."""
    return ORACLE if task is None else TASK_ORACLE.format(task=task)


def is_bundle_path(relative: str) -> bool:
    """A relative POSIX path with no `..`, no absolute root and no empty parts."""
    parts = relative.split("/")
    return bool(relative) and not relative.startswith("/") and "\\" not in relative \
        and all(part not in ("", ".", "..") for part in parts)


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refused (ValueError) unless it stays inside the bundle once links are
    followed: no absolute paths, no `..`, no symbolic links out."""
    if not is_bundle_path(relative):
        raise ValueError(f"{relative!r} is not a plain path inside the bundle")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ValueError(f"{relative!r} leads outside the bundle (to {target})")
    return target


def feed(digest, path: Path) -> None:
    """Add a file's bytes to a hashlib digest, a megabyte at a time."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    feed(digest, path)
    return digest.hexdigest()
