"""The serving install never needs or imports torch."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of
from test_serve_process import ServeProcess

pytestmark = pytest.mark.heavy
ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = """
import asyncio, sys
from embedrpc.service.config import ServerConfig
from embedrpc.service.server import EmbedServer
import grpc
from embedrpc.v1 import embedding_pb2 as pb, embedding_pb2_grpc as pb_grpc

async def main():
    server = EmbedServer(ServerConfig(sys.argv[1], host="127.0.0.1", port=0, metrics_port=0,
                                      runtime=sys.argv[2]))
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await pb_grpc.EmbeddingServiceStub(channel).Embed(pb.EmbedRequest(inputs=["x"]))
    await server.stop(1)
    assert len(response.embeddings) == 1
    heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "peft")
                   if m in sys.modules)
    print("heavy modules:", heavy)
    sys.exit(1 if heavy else 0)

asyncio.run(main())
"""


def test_serving_path_imports_no_torch(tmp_path_factory, qwen3_tokenizer_json):
    """Even where torch is installed, serving (every CPU runtime) never imports it."""
    bundle = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    for runtime in ("onnx-cpu", "openvino-cpu", "llamacpp"):
        done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(bundle), runtime],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "heavy modules: []" in done.stdout


def test_plain_pip_install_serves_without_torch(tmp_path_factory, tmp_path, qwen3_tokenizer_json):
    bundle = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    env_dir = tmp_path / "serving-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", str(ROOT)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print([m for m in ('torch', 'transformers', 'llama_cpp') "
                            "if u.find_spec(m)])"], capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"  # no torch, and llama.cpp only with its extra
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0,
                          executable=env_dir / "bin" / "embedrpc")
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest(), timeout=10)
        assert (info.runtime, info.artifact) == ("onnx-cpu", "onnx-int8")
        assert info.runtime_reason.startswith("no usable CUDA")
        served = vectors_of(server.stub().Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30))
    finally:
        server.stop()
    reference = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-int8")
    try:
        expected = vectors_of(reference.stub.Embed(pb.EmbedRequest(inputs=["hello"])))
    finally:
        reference.stop()
    assert np.array_equal(served, expected)
