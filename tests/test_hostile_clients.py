"""What a client cannot do to the server: unparseable messages are INVALID_ARGUMENT (unary and
stream, never a hang), megabytes are never tokenised, a full queue holds streams back instead
of failing them, and shutting down ends open streams cleanly."""

from __future__ import annotations

import logging
import signal
import threading
import time

import grpc
import pytest

from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer
from test_serve_process import ServeProcess

EMBED = "/embedrpc.v1.EmbeddingService/Embed"
STREAM = "/embedrpc.v1.EmbeddingService/EmbedStream"
NOT_A_MESSAGE = b"\xff\xff\xff"
INVALID_UTF8 = b"\x12\x02\xff\xfe"  # field 2 (inputs), length 2, bytes that are not UTF-8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


@pytest.fixture(scope="module")
def server(bundle):
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32")
    yield server
    server.stop()


def raw(channel, method, streaming=False):
    """A call that sends bytes as they are and parses EmbedResponses."""
    factory = channel.stream_stream if streaming else channel.unary_unary
    return factory(method, request_serializer=lambda data: data,
                   response_deserializer=pb.EmbedResponse.FromString)


@pytest.mark.parametrize("payload", [NOT_A_MESSAGE, INVALID_UTF8], ids=["bytes", "utf8"])
def test_malformed_unary_is_invalid_argument_in_one_line(server, payload, caplog):
    with caplog.at_level(logging.WARNING, logger="embedrpc"):
        with pytest.raises(grpc.RpcError) as error:
            raw(server.channel, EMBED)(payload, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("malformed EmbedRequest: ")
    lines = [r for r in caplog.records if "malformed EmbedRequest" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "Traceback" not in caplog.text
    assert server.metric("embedrpc_requests_total", method="Embed",
                         code="INVALID_ARGUMENT") >= 1


@pytest.mark.parametrize("payload", [NOT_A_MESSAGE, INVALID_UTF8], ids=["bytes", "utf8"])
def test_malformed_stream_message_ends_the_stream_naming_it(server, payload):
    valid = pb.EmbedRequest(id="first", inputs=["hello"]).SerializeToString()
    answered = []
    with pytest.raises(grpc.RpcError) as error:
        for response in raw(server.channel, STREAM, streaming=True)(
                iter([valid, payload, valid]), timeout=10):
            answered.append(response.id)
    assert answered == ["first"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("request #1: malformed EmbedRequest: ")


def test_megabytes_are_never_tokenised(server, monkeypatch):
    seen = []
    tokenizer = server.server.embedder.tokenizer
    inner = tokenizer._tokenizer

    class Recording:
        def __getattr__(self, name):
            return getattr(inner, name)

        def encode_batch(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return inner.encode_batch(texts, **kwargs)

    monkeypatch.setattr(tokenizer, "_tokenizer", Recording())
    huge = "word " * 700_000  # 3.5 MB, under the 4 MiB message limit
    with pytest.raises(grpc.RpcError) as error:
        server.stub.Embed(pb.EmbedRequest(inputs=["fine", huge]), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 1 has 3500000 characters, over the limit of 128 tokens" in \
        error.value.details()
    assert seen == []  # refused before any tokenising
    for truncation in (pb.TRUNCATION_RIGHT, pb.TRUNCATION_LEFT):
        response = server.stub.Embed(pb.EmbedRequest(inputs=[huge], truncation=truncation),
                                     timeout=30)
        assert list(response.usage.input_token_counts) == [128]
    limit = tokenizer.max_chars(128)
    assert max(seen) <= limit + len("Document: ") < len(huge) // 50


def test_a_message_over_the_limit_is_refused_by_size(server):
    with pytest.raises(grpc.RpcError) as error:
        server.stub.Embed(pb.EmbedRequest(inputs=["x" * (5 * 1024 * 1024)]), timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.value.details()


def test_streams_wait_for_room_instead_of_failing(bundle):
    """64 pipelining streams against a queue of 8: every request answered, in order."""
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-int8", max_queue=8)
    try:
        results, failures = {}, []

        def stream(key):
            requests = [pb.EmbedRequest(id=f"{key}-{i}", inputs=[f"text {key} {i}", "more"])
                        for i in range(20)]
            try:
                results[key] = [r.id for r in server.stub.EmbedStream(iter(requests),
                                                                       timeout=120)]
            except grpc.RpcError as error:
                failures.append(error.code())

        threads = [threading.Thread(target=stream, args=(k,)) for k in range(64)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert failures == []
        assert all(results[k] == [f"{k}-{i}" for i in range(20)] for k in range(64))
        assert server.metric("embedrpc_requests_total", method="EmbedStream",
                             code="RESOURCE_EXHAUSTED") == 0
    finally:
        server.stop()


def test_a_stream_waiting_for_room_is_released_at_shutdown(bundle):
    """The scheduler wakes waiters when it closes: UNAVAILABLE, not a hang."""
    import asyncio

    from embedrpc.service.core.metrics import Metrics
    from embedrpc.service.core.scheduler import Scheduler

    class Never:
        policy = None

    async def main():
        scheduler = Scheduler(Never(), max_queue=1, metrics=Metrics())
        first = asyncio.ensure_future(scheduler.embed([[1]]))
        waiting = asyncio.ensure_future(scheduler.embed([[2]], wait_for_room=True))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await scheduler.close()
        with pytest.raises(RequestError) as error:
            await waiting
        assert error.value.kind is ErrorKind.UNAVAILABLE
        first.cancel()

    asyncio.run(main())


def test_sigterm_ends_open_streams_after_answering_what_they_read(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0,
                          "--runtime", "onnx-cpu", "--grace-seconds", 30)
    sent, answered = [], []

    def requests():
        for i in range(1000):
            sent.append(f"r{i}")
            yield pb.EmbedRequest(id=f"r{i}", inputs=[f"text {i}"])
            time.sleep(0.05)

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        for response in server.stub().EmbedStream(requests(), timeout=60):
            answered.append(response.id)
            if len(answered) == 10:
                server.process.send_signal(signal.SIGTERM)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the server is shutting down" in error.value.details()
    assert answered == [f"r{i}" for i in range(len(answered))]  # in order, none lost before
    assert len(answered) >= 10 and time.monotonic() - started < 20  # not cut at the grace end
    assert server.process.wait(30) == 0
