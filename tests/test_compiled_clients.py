"""Clients in compiled languages, built here from protos/ with Debian's gRPC (C++ 1.51, Go in
GOPATH mode, Java 1.41 with javac) and run against a live server: Embed and EmbedStream (ids
echoed, order kept), vectors checked against sentence-transformers, and a bad request's
status."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedrpc.service.bundle.formats import BARS

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["how do embeddings work?", "Ein Satz auf Deutsch.", "短い日本語の文", "🙂 emoji"]
INVALID_ARGUMENT = 3


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: scripts/install.sh installs Debian's "
                    f"libgrpc++-dev, protobuf-compiler-grpc, golang-go, "
                    f"golang-google-grpc-dev, protoc-gen-go, protoc-gen-go-grpc, "
                    f"default-jdk-headless, libgrpc-java and its jars")


@pytest.fixture(scope="module")
def go_client(tmp_path_factory) -> Path:
    _require("protoc", "protoc-gen-go", "protoc-gen-go-grpc", "go")
    out = tmp_path_factory.mktemp("go")
    done = subprocess.run(["bash", str(ROOT / "clients/go/build.sh"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out / "embedrpc-client"


@pytest.fixture(scope="module")
def cpp_client(tmp_path_factory) -> Path:
    _require("cmake", "protoc", "grpc_cpp_plugin", "pkg-config")
    build = tmp_path_factory.mktemp("cpp")
    for command in (["cmake", "-S", str(ROOT / "clients/cpp"), "-B", str(build),
                     "-DCMAKE_BUILD_TYPE=Release"],
                    ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "embedrpc-client"


@pytest.fixture(scope="module")
def java_client(tmp_path_factory) -> Path:
    _require("protoc", "grpc_java_plugin", "javac", "java")
    out = tmp_path_factory.mktemp("java")
    done = subprocess.run(["bash", str(ROOT / "clients/java/build.sh"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out / "embedrpc-client"


@pytest.fixture(scope="module")
def expected(qwen3_tokenizer_json) -> np.ndarray:
    return SentenceTransformer(str(cached_checkpoint("tiny", True)),
                               device="cpu").encode(TEXTS, prompt_name="query")


@pytest.mark.parametrize("language", ["go", "cpp", "java"])
@pytest.mark.parametrize("runtime,artifact", [("onnx-cpu", "onnx-fp32"),
                                              ("llamacpp", "gguf-q8_0")])
def test_client_against_a_live_server(request, tmp_path_factory, expected, language, runtime,
                                      artifact):
    client = request.getfixturevalue(f"{language}_client")
    bundle = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    server = LoopbackServer(bundle, runtime=runtime, artifact=artifact)
    try:
        done = subprocess.run([str(client), server.target, *TEXTS], capture_output=True,
                              text=True, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    unary = np.array(report["unary"]["embeddings"], dtype=np.float32)
    assert report["unary"]["id"] == f"{language}-unary" and report["unary"]["dimensions"] == 64
    assert [s["id"] for s in report["stream"]] == [f"{language}-stream-{i}"
                                                   for i in range(len(TEXTS))]
    streamed = np.array([s["embeddings"][0] for s in report["stream"]], dtype=np.float32)
    for vectors in (unary, streamed):
        cosines = np.sum(vectors * expected, axis=1) / np.linalg.norm(vectors, axis=1) \
            / np.linalg.norm(expected, axis=1)
        assert cosines.min() >= BARS[artifact], cosines
    assert report["invalid_code"] == INVALID_ARGUMENT
    assert "inputs is empty" in report["invalid_message"]
