"""The 0.6B-shape random checkpoint and its bundle, built once and cached (never committed)."""

from __future__ import annotations

import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"
FORMATS = "onnx-fp32,onnx-int8,gguf-f16,gguf-q8_0"


def bundle(shape: str = "qwen3-0.6b") -> tuple[Path, Path]:
    """(checkpoint, bundle) at `shape`, exporting on first use (~8 minutes on 2 cores)."""
    from embedrpc.export.pipeline import export_bundle
    from fixtures.random_checkpoint import build_random_checkpoint

    checkpoint = CACHE / f"{shape}-checkpoint"
    out = CACHE / f"{shape}-bundle"
    if not (checkpoint / "config.json").is_file():
        print(f"[bench] building a random {shape} checkpoint", file=sys.stderr)
        build_random_checkpoint(checkpoint, shape, appends_eos=True, max_seq_length=32768)
    if not (out / "manifest.json").is_file():
        print(f"[bench] exporting {FORMATS} (cached in {out})", file=sys.stderr)
        export_bundle(str(checkpoint), out, formats=FORMATS, force=True)
    return checkpoint, out
