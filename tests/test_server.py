"""The gRPC service on loopback, for each CPU runtime: parity, encodings, streaming, batching,
status codes, cancellation, backpressure, drain, health and reflection."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sentence_transformers import SentenceTransformer
from sentence_transformers.util.quantization import quantize_embeddings

from embedrpc.service.bundle.formats import BARS
from embedrpc.service.bundle.manifest import load_manifest
from embedrpc.service.core.encoding import matryoshka
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, SlowReadingProxy, packed_of, vectors_of

# (runtime, artifact, min cosine vs the oracle)
RUNTIMES = [(runtime, artifact, BARS[artifact]) for runtime, artifact in (
    ("onnx-cpu", "onnx-int8"), ("onnx-cpu", "onnx-fp32"), ("llamacpp", "gguf-q8_0"),
    ("llamacpp", "gguf-f16"))]
TEXTS = ["what is a vector database?", "Paris is the capital of France.", "🙂 emoji",
         "深度学习", "tabs\tand\nnewlines", "a much longer document about retrieval " * 8]


@pytest.fixture(scope="module")
def checkpoint(qwen3_tokenizer_json):
    return cached_checkpoint("tiny", True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, checkpoint):
    return exported_bundle(tmp_path_factory, checkpoint)


@pytest.fixture(scope="module")
def oracle(checkpoint):
    return SentenceTransformer(str(checkpoint), device="cpu")


@pytest.fixture(scope="module", params=RUNTIMES, ids=[r[1] for r in RUNTIMES])
def served(request, bundle):
    runtime, artifact, bar = request.param
    # What the runtime and scheduler do with repeated texts: without the embedding cache, which
    # would answer them (tests/test_cache.py).
    server = LoopbackServer(bundle, runtime=runtime, artifact=artifact, cache_bytes=0)
    yield server, bar
    server.stop()


@pytest.fixture()
def gated(bundle):
    server = LoopbackServer(bundle, gated=True, runtime="onnx-cpu", artifact="onnx-fp32",
                            max_queue=8, cache_bytes=0)
    yield server
    server.runtime.gate.set()
    server.stop()


def min_cosine(a, b) -> float:
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1)
                        / np.linalg.norm(b, axis=1)))


def assert_same_vectors(server, got: np.ndarray, expected: np.ndarray) -> None:
    """Bit-for-bit on ONNX; within llama.cpp's packing rounding (see llamacpp_runtime)."""
    settings = server.server.config.runtime_settings
    if server.server.choice.runtime == "llamacpp" and not settings.get("batch_invariant"):
        np.testing.assert_allclose(got, expected, atol=5e-3)
        assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
    else:
        assert np.array_equal(got, expected)


def embed(server, texts=TEXTS, **fields) -> pb.EmbedResponse:
    return server.stub.Embed(pb.EmbedRequest(inputs=texts, **fields), timeout=30)


# -- parity and output shapes --------------------------------------------------------------
@pytest.mark.parametrize("task,prompt_name", [(pb.TASK_QUERY, "query"),
                                              (pb.TASK_DOCUMENT, "document"),
                                              (pb.TASK_UNSPECIFIED, "document")])
def test_vectors_match_sentence_transformers(served, oracle, task, prompt_name):
    server, bar = served
    response = embed(server, task=task)
    expected = oracle.encode(TEXTS, prompt_name=prompt_name)
    assert response.dimensions == 64 and response.encoding == pb.ENCODING_FLOAT32
    assert min_cosine(vectors_of(response), expected) >= bar
    assert response.usage.input_tokens == sum(response.usage.input_token_counts)


@pytest.mark.parametrize("normalize", [True, False])
def test_matryoshka_matches_sentence_transformers(served, oracle, normalize):
    server, bar = served
    response = embed(server, task=pb.TASK_QUERY, dimensions=32, normalize=normalize)
    expected = oracle.encode(TEXTS, prompt_name="query", truncate_dim=32,
                             normalize_embeddings=normalize)
    got = vectors_of(response)
    assert got.shape == (len(TEXTS), 32) and response.dimensions == 32
    assert min_cosine(got, expected) >= bar
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) if normalize else np.all(norms < 0.999)


@pytest.mark.parametrize("encoding,precision,dtype", [
    (pb.ENCODING_INT8, "int8", np.int8), (pb.ENCODING_UINT8, "uint8", np.uint8),
    (pb.ENCODING_BINARY, "binary", np.int8), (pb.ENCODING_UBINARY, "ubinary", np.uint8)])
@pytest.mark.parametrize("dims,normalize", [(64, True), (32, True), (32, False)])
def test_encodings_equal_quantize_embeddings(served, bundle, encoding, precision, dtype, dims,
                                             normalize):
    """The bytes are sentence-transformers' quantize_embeddings of the float vectors, with the
    bundle's calibration ranges for int8/uint8."""
    server, _ = served
    floats = vectors_of(embed(server, dimensions=dims, normalize=normalize))
    ranges = None
    if precision.endswith("int8"):
        calibration = load_manifest(bundle).calibration.ranges
        source = calibration[str(dims)] if normalize else calibration["64"]
        ranges = np.array([source.min[:dims], source.max[:dims]], dtype=np.float32)
    expected = quantize_embeddings(floats, precision=precision, ranges=ranges)
    response = embed(server, dimensions=dims, normalize=normalize, encoding=encoding)
    assert response.encoding == encoding and response.dimensions == dims
    np.testing.assert_array_equal(packed_of(response, dtype), expected)


def _embed_amid_batch_mates(server, text: str, **fields) -> list[pb.Embedding]:
    """`text`'s embedding alone, then first or last among other texts in concurrent requests
    (which the scheduler batches together)."""
    rows = [embed(server, [text], **fields).embeddings[0]]
    lock = threading.Lock()

    def call(texts, position):
        row = embed(server, texts, **fields).embeddings[position]
        with lock:
            rows.append(row)

    threads = [threading.Thread(target=call, args=(
        ([text] + TEXTS[1:2 + key], 0) if key % 2 else (TEXTS[key + 1:] + [text], -1)))
        for key in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return rows


def test_same_text_same_vector_whatever_its_batch_mates(served):
    """A text first or last among batch-mates in one forward pass, against the text alone and
    against what the server answers: bit for bit on ONNX; within llama.cpp's packing rounding.
    The int8 artifact never shares a pass: that is asserted instead, through the server."""
    server, _ = served
    runtime = server.runtime
    if runtime.policy.max_sequences == 1:
        before = (server.metric("embedrpc_batch_inputs_count"),
                  server.metric("embedrpc_batch_inputs_sum"))
        rows = _embed_amid_batch_mates(server, TEXTS[0])
        batches = server.metric("embedrpc_batch_inputs_count") - before[0]
        assert batches > len(rows) and server.metric("embedrpc_batch_inputs_sum") - before[1] \
            == batches  # one input per pass, however the requests arrived
        assert np.array_equal(vectors_of_rows(rows), vectors_of_rows(rows[:1] * len(rows)))
        return
    ids = [list(r.ids) for r in server.stub.Tokenize(pb.TokenizeRequest(inputs=TEXTS)).results]
    alone = runtime.embed_batch(ids[:1])
    first = runtime.embed_batch(ids)[:1]
    last = runtime.embed_batch(ids[1:] + ids[:1])[-1:]
    served_alone = vectors_of(embed(server, TEXTS[:1]))
    # what the server adds: the full-size Matryoshka re-normalisation, nothing else
    assert np.array_equal(served_alone, matryoshka(alone, alone.shape[1], normalize=True))
    for amid in (first, last):
        assert_same_vectors(server, amid, alone)


def vectors_of_rows(rows: list[pb.Embedding]) -> np.ndarray:
    return np.array([list(e.values) for e in rows], dtype=np.float32)


def test_llamacpp_batch_invariant_mode_is_exact(bundle):
    server = LoopbackServer(bundle, runtime="llamacpp", artifact="gguf-q8_0",
                            batch_invariant=True)
    try:
        rows = _embed_amid_batch_mates(server, TEXTS[5])
        assert all(list(row.values) == list(rows[0].values) for row in rows)
    finally:
        server.stop()


def test_stream_answers_every_request_once_in_order(served):
    server, _ = served
    requests = [pb.EmbedRequest(id=f"req-{i}", inputs=TEXTS[: 1 + i % len(TEXTS)],
                                task=pb.TASK_QUERY if i % 2 else pb.TASK_DOCUMENT)
                for i in range(60)]
    responses = list(server.stub.EmbedStream(iter(requests), timeout=60))
    assert [r.id for r in responses] == [r.id for r in requests]
    for request, response in zip(requests, responses, strict=True):
        assert len(response.embeddings) == len(request.inputs)
    unary = vectors_of(embed(server, requests[7].inputs, task=requests[7].task))
    assert_same_vectors(server, vectors_of(responses[7]), unary)


def test_tokenize_rpc(served, bundle):
    server, _ = served
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(bundle)
    response = server.stub.Tokenize(pb.TokenizeRequest(inputs=TEXTS, task=pb.TASK_QUERY))
    assert [list(r.ids) for r in response.results] == \
        [hf("Query: " + t)["input_ids"] for t in TEXTS]
    assert response.results[0].tokens[0] == "Query"
    assert list(response.usage.input_token_counts) == [len(r.ids) for r in response.results]


def test_get_info(served, bundle):
    server, _ = served
    info = server.stub.GetInfo(pb.GetInfoRequest())
    manifest = load_manifest(bundle)
    assert (info.runtime, info.artifact) == (server.server.choice.runtime,
                                             server.server.choice.artifact)
    assert info.model == manifest.source.public_name and info.hidden_size == 64
    assert list(info.matryoshka_dimensions) == [32, 64]
    assert dict(info.prompts) == {"query": "Query: ", "document": "Document: "}
    assert info.max_input_tokens == 128
    assert info.runtime_reason.startswith(
        f"artifact {info.artifact} was requested; {info.runtime} {info.artifact}: passed "
        f"self-check (")
    assert info.runtime_reason.endswith(f"chose {info.runtime} {info.artifact} (passed)")


# -- status codes --------------------------------------------------------------------------
@pytest.mark.parametrize("fields,message", [
    (dict(inputs=[]), "inputs is empty"),
    (dict(inputs=["fine", ""]), "input 1 is empty"),
    (dict(inputs=["x"], dimensions=48), "dimensions 48 is not one of [32, 64]"),
    (dict(inputs=["x"], dimensions=0), "dimensions 0 is not one of [32, 64]"),
    # "Document", ":", 300 x " long", the trailing " ", EOS
    (dict(inputs=["ok", "long " * 300]), "input 1 has 304 tokens, over the limit of 128"),
    (dict(inputs=["x"], task=7), "task 7 is not a known Task"),
    (dict(inputs=["x"], truncation=9), "truncation 9 is not a known Truncation"),
    (dict(inputs=["x"], encoding=42), "encoding 42 is not a known Encoding"),
    (dict(inputs=["x"] * 2000), "2000 inputs is over this server's queue of 1024"),
])
def test_bad_input_is_invalid_argument(served, fields, message):
    server, _ = served
    with pytest.raises(grpc.RpcError) as error:
        server.stub.Embed(pb.EmbedRequest(**fields), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_truncation_keeps_eos(served, bundle):
    server, _ = served
    long_text = "tokens " * 300
    for truncation in (pb.TRUNCATION_RIGHT, pb.TRUNCATION_LEFT):
        response = embed(server, [long_text], truncation=truncation)
        assert list(response.usage.input_token_counts) == [128]
        ids = server.stub.Tokenize(pb.TokenizeRequest(inputs=[long_text],
                                                      truncation=truncation)).results[0].ids
        assert len(ids) == 128 and ids[-1] == 151643 and ids[0] == 7524  # "Document"


def test_stream_error_names_the_request(served):
    server, _ = served
    requests = [pb.EmbedRequest(id="good", inputs=["x"]), pb.EmbedRequest(id="bad", inputs=[]),
                pb.EmbedRequest(id="never", inputs=["y"])]
    received = []
    with pytest.raises(grpc.RpcError) as error:
        for response in server.stub.EmbedStream(iter(requests), timeout=30):
            received.append(response.id)
    assert received == ["good"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 'bad': inputs is empty" in error.value.details()


# -- scheduling: batching, cancellation, backpressure, failure, drain ----------------------
def test_concurrent_clients_share_batches(gated):
    runtime = gated.runtime
    runtime.gate.clear()
    first = gated.stub.Embed.future(pb.EmbedRequest(inputs=["first"]), timeout=30)
    assert runtime.entered.wait(10)
    waiting = [gated.stub.Embed.future(pb.EmbedRequest(inputs=[f"text {i}"]), timeout=30)
               for i in range(6)]
    _wait_for(lambda: gated.server.scheduler.queued == 6)
    runtime.gate.set()
    assert all(len(f.result().embeddings) == 1 for f in [first, *waiting])
    assert [len(b) for b in runtime.batches] == [1, 6]
    assert gated.metric("embedrpc_batch_requests_count") == 2
    assert gated.metric("embedrpc_batch_requests_sum") == 7  # six requests in one batch


def test_expired_request_leaves_the_queue(gated):
    runtime = gated.runtime
    runtime.gate.clear()
    first = gated.stub.Embed.future(pb.EmbedRequest(inputs=["first"]), timeout=30)
    assert runtime.entered.wait(10)
    with pytest.raises(grpc.RpcError) as error:
        gated.stub.Embed(pb.EmbedRequest(inputs=["late", "later"]), timeout=0.5)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_for(lambda: gated.server.scheduler.queued == 0)
    cancelled = gated.stub.Embed.future(pb.EmbedRequest(inputs=["cancel me"]), timeout=30)
    _wait_for(lambda: gated.server.scheduler.queued == 1)
    cancelled.cancel()
    _wait_for(lambda: gated.server.scheduler.queued == 0)
    assert gated.metric("embedrpc_queue_depth") == 0
    runtime.gate.set()
    assert len(first.result().embeddings) == 1
    sent = [len(ids) for batch in runtime.batches for ids in batch]
    assert len(sent) == 1  # neither the expired nor the cancelled inputs reached the runtime


def test_full_queue_is_resource_exhausted(gated):
    runtime = gated.runtime
    runtime.gate.clear()
    first = gated.stub.Embed.future(pb.EmbedRequest(inputs=["first"]), timeout=30)
    assert runtime.entered.wait(10)
    queued = gated.stub.Embed.future(pb.EmbedRequest(inputs=["q"] * 6), timeout=30)
    _wait_for(lambda: gated.server.scheduler.queued == 6)
    with pytest.raises(grpc.RpcError) as error:
        gated.stub.Embed(pb.EmbedRequest(inputs=["a", "b", "c"]), timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue holds 6 of 8 inputs" in error.value.details()
    runtime.gate.set()
    assert len(queued.result().embeddings) == 6 and len(first.result().embeddings) == 1
    assert gated.metric("embedrpc_requests_total", method="Embed",
                        code="RESOURCE_EXHAUSTED") == 1


def test_runtime_failure_is_internal_then_not_serving(gated):
    gated.runtime.fail = True
    health = health_pb2_grpc.HealthStub(gated.channel)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as error:
            gated.stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=30)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert "injected failure" in error.value.details()
    _wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="")).status ==
              health_pb2.HealthCheckResponse.NOT_SERVING)
    gated.runtime.fail = False
    assert len(embed(gated, ["x"]).embeddings) == 1
    _wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="")).status ==
              health_pb2.HealthCheckResponse.SERVING)


def test_an_unexpected_failure_is_internal_and_counted_so(gated, monkeypatch, caplog):
    def broken(*_args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(gated.server.embedder, "plan", broken)
    with pytest.raises(grpc.RpcError) as error:
        gated.stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=30)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error; the server's log has the details"
    assert gated.metric("embedrpc_requests_total", method="Embed", code="INTERNAL") == 1
    assert gated.metric("embedrpc_requests_total", method="Embed", code="OK") == 0
    assert "ZeroDivisionError: a bug" in caplog.text


def test_shutdown_drains_in_flight_and_refuses_new(bundle):
    server = LoopbackServer(bundle, gated=True, runtime="onnx-cpu", artifact="onnx-int8")
    runtime = server.runtime
    runtime.gate.clear()
    in_flight = server.stub.Embed.future(pb.EmbedRequest(inputs=TEXTS), timeout=30)
    assert runtime.entered.wait(10)
    stopping = threading.Thread(target=server.call, args=(server.server.stop(20),))
    stopping.start()
    deadline = time.monotonic() + 10
    while not server.server.drain.draining:  # the stop has begun
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fresh = grpc.insecure_channel(server.target)
    with pytest.raises(grpc.RpcError) as error:
        from embedrpc.v1 import embedding_pb2_grpc

        embedding_pb2_grpc.EmbeddingServiceStub(fresh).Embed(pb.EmbedRequest(inputs=["x"]),
                                                             timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    runtime.gate.set()
    assert len(in_flight.result().embeddings) == len(TEXTS)
    stopping.join(30)
    fresh.close()
    server.channel.close()
    server.loop.call_soon_threadsafe(server.loop.stop)


def test_a_stopping_server_delivers_a_large_answer_to_a_slow_reader(bundle):
    """The answer of a call that ends during the stop still reaches a client that reads it
    slowly (through a loaded proxy): no connection closes with a part of it still in the
    server's send queue."""
    server = LoopbackServer(bundle, gated=True, runtime="onnx-cpu", artifact="onnx-int8",
                            max_queue=4096, cache_bytes=0)
    proxy = SlowReadingProxy(server.port)
    channel = grpc.insecure_channel(f"127.0.0.1:{proxy.port}")
    texts = [f"text {i}" for i in range(2000)]  # about 0.5 MB of answer
    runtime = server.runtime
    runtime.gate.clear()
    in_flight = pb_grpc.EmbeddingServiceStub(channel).Embed.future(
        pb.EmbedRequest(inputs=texts), timeout=60)
    assert runtime.entered.wait(10)
    stopping = asyncio.run_coroutine_threadsafe(server.server.stop(30), server.loop)
    _wait_for(lambda: server.server.drain.draining)
    runtime.gate.set()
    try:
        assert len(in_flight.result().embeddings) == len(texts)
        stopping.result(60)
    finally:
        channel.close()
        proxy.close()
        server.channel.close()
        server.loop.call_soon_threadsafe(server.loop.stop)


def test_every_call_is_counted_while_served_and_no_longer(gated):
    """What the stop waits for (Drain.finished): a call counts from its start until it ends,
    however it ends: answered, refused as invalid, streamed, or cancelled by its client."""
    drain, runtime = gated.server.drain, gated.runtime
    assert len(embed(gated, ["x"]).embeddings) == 1
    with pytest.raises(grpc.RpcError):
        embed(gated, [])
    requests = [pb.EmbedRequest(inputs=[f"text {i}"], id=str(i)) for i in range(3)]
    assert len(list(gated.stub.EmbedStream(iter(requests), timeout=30))) == 3
    _wait_for(lambda: drain.serving == 0)
    runtime.gate.clear()
    runtime.entered.clear()
    held = gated.stub.Embed.future(pb.EmbedRequest(inputs=["held"]), timeout=30)
    assert runtime.entered.wait(10)
    _wait_for(lambda: drain.serving == 1)
    held.cancel()
    _wait_for(lambda: drain.serving == 0)
    runtime.gate.set()


# -- health and reflection ------------------------------------------------------------------
def test_health(served):
    server, _ = served
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "embedrpc.v1.EmbeddingService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
