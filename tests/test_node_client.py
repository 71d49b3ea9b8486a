"""A second-language client: Node with @grpc/grpc-js and @grpc/proto-loader, against the real
server, checking vectors against sentence-transformers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from embedrpc.service.bundle.formats import BARS

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"


def run_node_client(target: str, tmp_path, bar: float, env: dict | None = None):
    """The Node client against `target`; its vectors checked against sentence-transformers."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@grpc").is_dir():
        pytest.fail("node and `npm ci --prefix tests/node` are required (scripts/install.sh)")
    texts = ["how do embeddings work?", "Ein Satz auf Deutsch.", "短い日本語の文"]
    vectors = SentenceTransformer(str(cached_checkpoint("tiny", True)),
                                  device="cpu").encode(texts, prompt_name="query")
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"texts": texts, "vectors": vectors.tolist(), "bar": bar}))
    done = subprocess.run(["node", str(NODE_DIR / "client.mjs"), target, str(ROOT / "protos"),
                           str(expected)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr + done.stdout
    assert "node client: ok (21 responses checked)" in done.stdout


@pytest.mark.parametrize("runtime,artifact", [("llamacpp", "gguf-q8_0"),
                                              ("onnx-cpu", "onnx-fp32")])
def test_node_client(tmp_path_factory, tmp_path, qwen3_tokenizer_json, runtime, artifact):
    bundle = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    server = LoopbackServer(bundle, runtime=runtime, artifact=artifact)
    try:
        run_node_client(server.target, tmp_path, BARS[artifact])
    finally:
        server.stop()
