"""Replicas behind client-side balancing, as a headless Service gives them: a client with the
round_robin policy and the retry policy of clients/service_config.json over three
`embedrpc serve` processes spreads its calls (each replica serves at least 20%), and when one
replica gets SIGTERM mid-run no call fails."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

from conftest import cached_checkpoint, exported_bundle
from test_serve_process import ServeProcess

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]
SERVICE_CONFIG = (ROOT / "clients" / "service_config.json").read_text()


@pytest.fixture()
def replicas(tmp_path_factory, qwen3_tokenizer_json):
    bundle = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    started = []
    try:
        for _ in range(3):
            server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port",
                                  "any", "--runtime", "onnx-cpu", "--grace-seconds", 10)
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


def ok_embeds(server) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=10).read().decode()
    match = re.search(r'^embedrpc_requests_total\{code="OK",method="Embed"\} (\S+)', body, re.M)
    return float(match.group(1)) if match else 0.0


def balanced_channel(replicas) -> grpc.Channel:
    """What a client of a headless Service does: every address, round_robin, retries."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in replicas)
    return grpc.insecure_channel(target, options=[("grpc.service_config", SERVICE_CONFIG),
                                                  ("grpc.enable_retries", 1)])


def test_round_robin_spreads_and_a_draining_replica_costs_nothing(replicas):
    channel = balanced_channel(replicas)
    stub = pb_grpc.EmbeddingServiceStub(channel)
    for i in range(300):
        stub.Embed(pb.EmbedRequest(inputs=[f"text {i}"]), timeout=30)
    counts = [ok_embeds(server) for server in replicas]
    assert sum(counts) == 300 and min(counts) >= 0.2 * 300, counts

    failures, done = [], []

    def client(key: int) -> None:
        for i in range(100):
            try:
                stub.Embed(pb.EmbedRequest(inputs=[f"client {key} text {i}"]), timeout=30)
                done.append(i)
            except grpc.RpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    threads = [threading.Thread(target=client, args=(key,)) for key in range(4)]
    [t.start() for t in threads]
    deadline = time.monotonic() + 60
    while len(done) + len(failures) < 100 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert failures == [] and len(done) >= 100, (failures, len(done))
    replicas[0].process.send_signal(signal.SIGTERM)  # as Kubernetes does to a pod it removes
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert replicas[0].process.wait(30) == 0
    assert failures == [] and len(done) == 400
    channel.close()
