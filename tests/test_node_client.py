"""A second-language client: Node with @grpc/grpc-js and @grpc/proto-loader, against the real
server, checking vectors against sentence-transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"


@pytest.mark.parametrize("runtime,artifact,bar", [("llamacpp", "gguf-q8_0", 0.995),
                                                  ("onnx-cpu", "onnx-fp32", 0.99999)])
def test_node_client(tmp_path_factory, tmp_path, qwen3_tokenizer_json, runtime, artifact, bar):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@grpc").is_dir():
        pytest.fail("node and `npm ci --prefix tests/node` are required (scripts/install.sh)")
    checkpoint = cached_checkpoint("tiny", True)
    bundle = exported_bundle(tmp_path_factory, checkpoint)
    texts = ["how do embeddings work?", "Ein Satz auf Deutsch.", "短い日本語の文"]
    vectors = SentenceTransformer(str(checkpoint), device="cpu").encode(texts,
                                                                        prompt_name="query")
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"texts": texts, "vectors": vectors.tolist(), "bar": bar}))
    server = LoopbackServer(bundle, runtime=runtime, artifact=artifact)
    try:
        done = subprocess.run(["node", str(NODE_DIR / "client.mjs"), server.target,
                               str(ROOT / "protos"), str(expected)],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr + done.stdout
    assert "node client: ok (21 responses checked)" in done.stdout
