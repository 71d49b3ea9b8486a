"""Auto-selection proved on the host: every candidate is self-checked in a child process, a
crashing runtime is skipped and named, the verdict is cached, and an explicit choice that
crashes stops start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from embedrpc.service.runtimes.selection import SelectionError
from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def served_info(bundle, **options):
    server = LoopbackServer(bundle, **options)
    try:
        info = server.stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        vectors = vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30))
    finally:
        server.stop()
    return info, vectors


def test_a_crashing_runtime_is_skipped_named_and_remembered(bundle, tmp_path, crash_in_child,
                                                           monkeypatch):
    cache = str(tmp_path / "cache")
    crash_in_child("gguf-q8_0")
    info, vectors = served_info(bundle, cache=cache)
    reason = info.runtime_reason
    assert "llamacpp gguf-q8_0: crashed (SIGSEGV) in self-check;" in reason
    assert "onnx-cpu onnx-int8: passed self-check (" in reason  # each family's best was timed
    assert "openvino-cpu openvino-int8: passed self-check (" in reason
    assert "llamacpp gguf-f16: passed self-check (" in reason  # llama.cpp's next artifact
    assert (info.runtime, info.artifact) in {("onnx-cpu", "onnx-int8"), ("llamacpp", "gguf-f16"),
                                             ("openvino-cpu", "openvino-int8")}
    assert reason.endswith(f"chose {info.runtime} {info.artifact} (the fastest that passed)")
    assert vectors.shape == (1, 64)

    # A restart without the crash reuses the verdicts: the crash is still remembered.
    monkeypatch.delenv("EMBEDRPC_TEST_CRASH")
    again, _ = served_info(bundle, cache=cache)
    assert "llamacpp gguf-q8_0: crashed (SIGSEGV) in self-check [cached];" in again.runtime_reason
    assert (again.runtime, again.artifact) == (info.runtime, info.artifact)
    assert again.runtime_reason.count("[cached]") == 4  # one verdict per CPU family

    # A fresh cache checks again, and llama.cpp Q8_0 is fine on this host.
    fresh, _ = served_info(bundle, cache=str(tmp_path / "fresh"))
    assert "llamacpp gguf-q8_0: passed self-check (" in fresh.runtime_reason
    assert "[cached]" not in fresh.runtime_reason


def test_a_requested_artifact_that_crashes_stops_start_up(bundle, tmp_path, crash_in_child):
    crash_in_child("gguf-q8_0")
    with pytest.raises(SelectionError, match=r"crashed \(SIGSEGV\) in self-check$"):
        LoopbackServer(bundle, runtime="llamacpp", artifact="gguf-q8_0", cache=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "embedrpc.service.cli", "serve", str(bundle),
                           "--artifact", "gguf-q8_0", "--port", "0", "--metrics-port", "0",
                           "--cache", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("embedrpc: error:")]
    assert errors == ["embedrpc: error: artifact gguf-q8_0 was requested, but it failed its "
                      "self-check on this host: llamacpp gguf-q8_0: crashed (SIGSEGV) in "
                      "self-check [cached]"]


def test_a_broken_copy_of_a_bundle_does_not_poison_the_cache(bundle, tmp_path):
    """A verdict about these files (checksums) is not one about the host: never cached."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    model = copy / "onnx" / "int8" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    cache = str(tmp_path / "cache")
    with pytest.raises(SelectionError, match="sha256 does not match the manifest"):
        LoopbackServer(copy, artifact="onnx-int8", cache=cache)
    info, _ = served_info(bundle, artifact="onnx-int8", cache=cache)
    assert "onnx-cpu onnx-int8: passed self-check (" in info.runtime_reason
    assert "[cached]" not in info.runtime_reason
