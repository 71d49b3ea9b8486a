"""Shared fixtures: random-weight Qwen3 checkpoints (real Qwen3 tokenizer) and their bundles.

Checkpoints are built once and cached on disk (~/.cache/embedrpc/test-checkpoints); bundles are
exported once per test session. A missing tokenizer fails the run: it is never skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from fixtures.random_checkpoint import (
    build_random_checkpoint,
    default_cache_dir,
    fetch_qwen3_tokenizer,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tokenizer and test checkpoints are kept across runs; everything else embedrpc caches
# (self-check verdicts) starts empty in each run, so every run proves the runtimes afresh.
PERSISTENT_CACHE = default_cache_dir()
SESSION_CACHE = tempfile.mkdtemp(prefix="embedrpc-test-cache-")
os.environ["EMBEDRPC_CACHE"] = SESSION_CACHE

MAX_SEQ_LENGTH = 128  # the tiny fixtures' max input tokens: long probes get truncated
CHECKPOINT_LAYOUT_VERSION = 2  # 2: the published layouts, rope theta 3.5e6
CRASH_INJECTION = Path(__file__).parent / "crash_injection"


def cached_checkpoint(shape: str, appends_eos: bool, layout: str = "merged", seed: int = 0,
                      max_seq_length: int = MAX_SEQ_LENGTH) -> Path:
    """A replica of a published repo (random weights): `merged` (the `-<task>` repos) or
    `base` (the base repo: its own config and four LoRA adapters)."""
    key = (f"{shape}-{'eos' if appends_eos else 'noeos'}-s{seed}-m{max_seq_length}-"
           f"{layout}-v{CHECKPOINT_LAYOUT_VERSION}")
    target = PERSISTENT_CACHE / "test-checkpoints" / key
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    build_random_checkpoint(staging, shape, appends_eos, seed, max_seq_length, layout,
                            cache_dir=PERSISTENT_CACHE)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def pytest_unconfigure(config):
    """The session's verdicts and compiled models go with it (up to 150 MB a run)."""
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def qwen3_tokenizer_json() -> Path:
    try:
        return fetch_qwen3_tokenizer(PERSISTENT_CACHE)
    except RuntimeError as exc:
        pytest.fail(f"the real Qwen3 tokenizer is required: {exc}", pytrace=False)


@pytest.fixture(scope="session", params=[True, False], ids=["eos", "noeos"])
def appends_eos(request) -> bool:
    return request.param


@pytest.fixture(scope="session")
def tiny_checkpoint(qwen3_tokenizer_json, appends_eos) -> Path:
    return cached_checkpoint("tiny", appends_eos)


@pytest.fixture(scope="session")
def adapter_checkpoint(qwen3_tokenizer_json) -> Path:
    """A replica of the base repo: jina_embeddings_v5 config, four task adapters."""
    return cached_checkpoint("tiny", True, layout="base")


_BUNDLES: dict[tuple, Path] = {}


def exported_bundle(tmp_path_factory, checkpoint: Path, **options) -> Path:
    """Export `checkpoint` once per session and options; returns the bundle directory."""
    from embedrpc.export.pipeline import export_bundle

    key = (str(checkpoint), tuple(sorted(options.items())))
    if key not in _BUNDLES:
        out = tmp_path_factory.mktemp("bundle") / "bundle"
        export_bundle(str(checkpoint), out, probe_max_tokens=MAX_SEQ_LENGTH, **options)
        _BUNDLES[key] = out
    return _BUNDLES[key]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    return exported_bundle(tmp_path_factory, tiny_checkpoint)


# Tests whose subject does not depend on whether the tokenizer appends EOS use one variant
# (it appends, as the published tokenizer does); tiny_checkpoint / tiny_bundle give both.
@pytest.fixture(scope="session")
def eos_checkpoint(qwen3_tokenizer_json) -> Path:
    return cached_checkpoint("tiny", True)


@pytest.fixture(scope="session")
def eos_bundle(tmp_path_factory, eos_checkpoint) -> Path:
    return exported_bundle(tmp_path_factory, eos_checkpoint)


@pytest.fixture()
def crash_in_child(monkeypatch):
    """`crash_in_child("gguf-q8_0")`: from now on, a Python child process that embeds with
    that artifact (or opens it, `at="open"`) dies of a real SIGSEGV; `at="slow-open"` makes
    opening take `slow_s` seconds, `at="hang-long"` makes batches of long texts hang
    (tests/crash_injection/sitecustomize.py)."""

    def inject(artifact: str, at: str = "embed", slow_s: float = 0, mark: str = "") -> None:
        paths = [str(CRASH_INJECTION), *filter(None, [os.environ.get("PYTHONPATH")])]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
        monkeypatch.setenv("EMBEDRPC_TEST_CRASH", artifact)
        monkeypatch.setenv("EMBEDRPC_TEST_CRASH_AT", at)
        monkeypatch.setenv("EMBEDRPC_TEST_SLOW_S", str(slow_s))
        monkeypatch.setenv("EMBEDRPC_TEST_HANG_MARK", mark)

    return inject
