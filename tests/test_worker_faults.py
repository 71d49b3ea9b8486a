"""The runtime's worker process under faults: a crash or kill mid-batch costs that batch
(UNAVAILABLE, the signal named), never the server; health goes NOT_SERVING and back once a new
worker serves; repeated crashes back off and stay NOT_SERVING; a slow stream consumer holds
back only itself."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.runtimes.interface import RuntimeFailure, options_for
from embedrpc.service.runtimes.selection import Choice
from embedrpc.service.runtimes.worker import WorkerRuntime
from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of

SERVING, NOT_SERVING = (health_pb2.HealthCheckResponse.SERVING,
                        health_pb2.HealthCheckResponse.NOT_SERVING)
LONG = ["a long document about retrieval and ranking " * 2] * 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def status(server) -> int:
    return health_pb2_grpc.HealthStub(server.channel).Check(
        health_pb2.HealthCheckRequest(service="embedrpc.v1.EmbeddingService"), timeout=5).status


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_a_worker_killed_mid_batch_costs_only_its_batch(bundle, signum, crash_in_child,
                                                        tmp_path):
    hanging = tmp_path / "hanging"
    crash_in_child("gguf-f16", at="hang-long", mark=str(hanging))  # long texts never finish
    server = LoopbackServer(bundle, gated=True, batch_invariant=True,
                            choice=Choice("llamacpp", "gguf-f16", "chosen by the test"))
    try:
        worker = server.runtime.inner
        assert isinstance(worker, WorkerRuntime) and worker.pid != os.getpid()
        before = vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30))
        doomed = server.stub.Embed.future(pb.EmbedRequest(inputs=LONG), timeout=60)
        wait_for(hanging.exists)  # the worker is inside the batch
        os.kill(worker.pid, signum)
        with pytest.raises(grpc.RpcError) as error:
            doomed.result()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"the inference worker crashed ({signum.name})" in error.value.details()
        wait_for(lambda: status(server) == NOT_SERVING or worker.health().serving)
        wait_for(lambda: status(server) == SERVING)
        after = vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30))
        assert np.array_equal(after, before)  # a new worker, the same model
        assert server.metric("embedrpc_requests_total", method="Embed", code="UNAVAILABLE") == 1
    finally:
        server.stop()


def test_batches_are_told_restarting_at_once_while_a_worker_starts(bundle, crash_in_child):
    """A restart does not hold batches: while the new worker loads (slowly here), a request
    gets UNAVAILABLE "restarting; retry" long before its deadline."""
    server = LoopbackServer(bundle, choice=Choice("onnx-cpu", "onnx-fp32", "chosen by the test"))
    try:
        crash_in_child("onnx-fp32", at="slow-open", slow_s=600)  # workers from now on
        os.kill(server.runtime.pid, signal.SIGKILL)
        wait_for(lambda: status(server) == NOT_SERVING)
        with pytest.raises(grpc.RpcError) as error:
            server.stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=20)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
        assert "the inference worker is restarting (crashed (SIGKILL)); retry" in \
            error.value.details()
    finally:
        server.stop()


def test_a_worker_that_does_not_start_in_time_is_a_failed_start(bundle, crash_in_child):
    crash_in_child("onnx-fp32", at="slow-open", slow_s=600)
    opened = Bundle(bundle)
    with pytest.raises(RuntimeFailure, match="^the inference worker did not start within 2 s$"):
        WorkerRuntime(opened.root, "onnx-fp32", "onnx-cpu", options_for(opened),
                      start_timeout=2)


def test_repeated_crashes_back_off_and_stay_not_serving(bundle, crash_in_child, caplog):
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32")
    try:
        crash_in_child("onnx-fp32", at="open")  # every worker started from now on dies
        caplog.set_level(logging.INFO, logger="embedrpc.worker")
        os.kill(server.runtime.pid, signal.SIGKILL)
        wait_for(lambda: "trying again in 4 s" in caplog.text, timeout=20)
        assert status(server) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as error:
            server.stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "crashed (SIGSEGV) while starting" in error.value.details()
        assert "restarting in 1 s" in caplog.text and "trying again in 2 s" in caplog.text
    finally:
        server.stop()


def test_a_slow_stream_consumer_holds_back_only_itself(bundle):
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-int8", max_queue=16)
    try:
        requests = [pb.EmbedRequest(id=f"s{i}", inputs=[f"slow {i}"]) for i in range(150)]
        received = []

        def slow_reader():
            for response in server.stub.EmbedStream(iter(requests), timeout=120):
                received.append(response.id)
                time.sleep(0.02)

        reader = threading.Thread(target=slow_reader)
        reader.start()
        wait_for(lambda: len(received) >= 5)
        started = time.monotonic()
        for i in range(10):  # others are served meanwhile, each promptly
            server.stub.Embed(pb.EmbedRequest(inputs=[f"fast {i}"]), timeout=10)
        fast = time.monotonic() - started
        assert reader.is_alive(), "the slow stream should still be draining"
        reader.join(120)
        assert received == [r.id for r in requests]
        assert fast < 10
    finally:
        server.stop()
