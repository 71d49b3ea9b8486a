"""`embedrpc serve` and `embedrpc embed` as processes: startup, config from the environment,
serving a checkpoint directory, and the SIGTERM drain."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

from conftest import cached_checkpoint, exported_bundle

CLI = [sys.executable, "-m", "embedrpc.service.cli"]


class ServeProcess:
    def __init__(self, *args, env=None, executable=None):
        """`executable`: an `embedrpc` script of another environment (default: this one's)."""
        self.lines: list[str] = []
        command = [str(executable)] if executable else CLI
        self.process = subprocess.Popen([*command, "serve", *map(str, args)],
                                        stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for(r"serving on port (\d+)", 180).group(1))
        self.target = f"127.0.0.1:{self.port}"
        metrics = [re.search(r"metrics on port (\d+)", line) for line in self.lines]
        self.metrics_port = next((int(m.group(1)) for m in metrics if m), None)

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in server output:\n{''.join(self.lines)}")

    def stub(self):
        return pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(self.target))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def test_sigterm_drains_in_flight_work(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", "any",
                          "--max-batch-tokens", 128, "--runtime", "llamacpp")
    metrics_port = server.metrics_port
    texts = [f"document number {i} " + "about retrieval and ranking " * 10 for i in range(200)]
    future = server.stub().Embed.future(pb.EmbedRequest(inputs=texts), timeout=120)

    def batches_done() -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        return float(re.search(r"^embedrpc_batch_inputs_count (\S+)", body, re.M).group(1))

    deadline = time.monotonic() + 60
    while batches_done() < 1:
        assert time.monotonic() < deadline, "no batch ran"
        time.sleep(0.01)
    assert not future.done()  # 200 inputs, one per batch: still in flight
    server.process.send_signal(signal.SIGTERM)
    response = future.result()
    assert len(response.embeddings) == 200
    assert server.process.wait(60) == 0
    server.wait_for("draining in-flight requests", 5)


def test_health_command(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0)
    try:
        done = subprocess.run([*CLI, "health", "--target", server.target], capture_output=True,
                              text=True, timeout=30)
        assert (done.returncode, done.stdout.strip()) == (0, "SERVING")
    finally:
        server.stop()
    gone = subprocess.run([*CLI, "health", "--target", server.target, "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "unhealthy: UNAVAILABLE" in gone.stderr


def test_environment_configures_the_server(bundle):
    server = ServeProcess(bundle, env={"EMBEDRPC_HOST": "127.0.0.1", "EMBEDRPC_PORT": "0",
                                       "EMBEDRPC_METRICS_PORT": "0", "EMBEDRPC_MAX_QUEUE": "7",
                                       "EMBEDRPC_RUNTIME": "onnx-cpu"})
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest(), timeout=10)
        assert (info.max_queue, info.runtime, info.artifact) == (7, "onnx-cpu", "onnx-int8")
    finally:
        server.stop()


def test_embed_cli_prints_json(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0)
    try:
        done = subprocess.run([*CLI, "embed", "--target", server.target, "--task", "query",
                               "--dimensions", "32", "hello", "world"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert [len(e["values"]) for e in body["embeddings"]] == [32, 32]
        assert body["usage"]["input_token_counts"] == [4, 4]  # "Query", ":", " hello", EOS
        bad = subprocess.run([*CLI, "embed", "--target", server.target, "--dimensions", "48",
                              "x"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert "INVALID_ARGUMENT: dimensions 48 is not one of [32, 64]" in bad.stderr
    finally:
        server.stop()


@pytest.mark.heavy
def test_serving_a_checkpoint_exports_it_first(tmp_path, qwen3_tokenizer_json):
    checkpoint = cached_checkpoint("tiny", False)
    server = ServeProcess(checkpoint, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0,
                          "--export-cache", tmp_path)
    try:
        info = server.stub().GetInfo(pb.GetInfoRequest(), timeout=10)
        content = json.loads(next(p for p in tmp_path.iterdir()
                                  if (p / "manifest.json").is_file())
                             .joinpath("manifest.json").read_text())["source"]["content_sha256"]
        assert info.model == f"{checkpoint.name} (local, sha256:{content[:12]})"
        assert [p for p in tmp_path.iterdir() if (p / "manifest.json").is_file()]
    finally:
        server.stop()


def test_unusable_bundle_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema_version": 99}')
    done = subprocess.run([*CLI, "serve", str(tmp_path), "--port", "0", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "manifest schema_version 99 is not supported" in done.stderr


def _edited_copy(bundle, target, edit):
    """A copy of `bundle` whose manifest `edit` changes (its checksums stay true)."""
    import shutil

    shutil.copytree(bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(target, manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _one_error_line(done) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("embedrpc: error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return errors[0]


@pytest.mark.parametrize("change,message", [
    (dict(pooling="mean"), "the manifest asks for pooling 'mean' with normalize True; embedrpc "
                           "serves last-token pooling, L2-normalised, only"),
    (dict(normalize=False), "asks for pooling 'last' with normalize False"),
    (dict(tokenizer={"padding_side": "middle"}),
     "the manifest's tokenizer.padding_side 'middle' is not left or right"),
])
def test_what_no_runtime_does_is_refused_not_served(bundle, tmp_path, change, message):
    """A manifest promising other pooling would otherwise be served with last-token pooling."""
    def edit(_root, manifest):
        for key, value in change.items():
            if isinstance(value, dict):
                manifest[key].update(value)
            else:
                manifest[key] = value

    copy = _edited_copy(bundle, tmp_path / "bundle", edit)
    for command in (["serve", str(copy), "--port", "0", "--metrics-port", "0"],
                    ["validate", str(copy)]):
        done = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=60)
        assert message in _one_error_line(done)


def test_unloadable_tokenizer_is_a_clear_error(bundle, tmp_path):
    """A tokenizer.json that is not one, with its checksum updated to match."""
    from embedrpc.service.bundle.layout import sha256_file

    def corrupt(root, manifest):
        (root / "tokenizer.json").write_text('{"model": "nothing like a tokenizer"}')
        for entry in manifest["tokenizer"]["files"]:
            if entry["path"] == "tokenizer.json":
                entry.update(bytes=(root / "tokenizer.json").stat().st_size,
                             sha256=sha256_file(root / "tokenizer.json"))

    copy = _edited_copy(bundle, tmp_path / "bundle", corrupt)
    done = subprocess.run([*CLI, "serve", str(copy), "--port", "0", "--metrics-port", "0",
                           "--artifact", "onnx-fp32"], capture_output=True, text=True,
                          timeout=120)
    assert "tokenizer.json: not a usable tokenizer" in _one_error_line(done)
