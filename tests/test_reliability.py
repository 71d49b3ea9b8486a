"""The reliability suite, bounded in time and on loopback only.

- load: 64 pipelining streams x 150 requests, twice, against `embedrpc serve`: nothing lost or
  reordered, ids echoed, vectors equal to single calls, and the server's (and its worker's)
  memory flat from one round to the next;
- fuzz: hypothesis over every EmbedRequest field plus raw bytes, unary and streamed: every
  answer is a known status and the server stays SERVING. EMBEDRPC_FUZZ_EXAMPLES sets the count
  (5,000 in CI; e.g. 100,000 for a nightly run).
(The fault tests are tests/test_worker_faults.py and tests/test_hostile_clients.py.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of
from test_serve_process import ServeProcess

pytestmark = pytest.mark.heavy

STREAMS, REQUESTS = 64, 150
FUZZ_EXAMPLES = int(os.environ.get("EMBEDRPC_FUZZ_EXAMPLES", "5000"))
KNOWN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def resident_kib(pid: int) -> int:
    """VmRSS of `pid` and of its children (the inference worker)."""
    total = 0
    for status in [Path(f"/proc/{pid}/status"), *(
            Path(f"/proc/{child}/status") for child in _children(pid))]:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _round(stub, texts) -> tuple[list[str], list[pb.EmbedResponse]]:
    """Every stream sends all its requests at once (pipelining). Returns what went wrong and
    the first stream's answers."""
    problems, answers, lock = [], {}, threading.Lock()

    def stream(key: int) -> None:
        requests = [pb.EmbedRequest(id=f"{key}-{i}", inputs=[texts[(key + i) % len(texts)]])
                    for i in range(REQUESTS)]
        try:
            responses = list(stub.EmbedStream(iter(requests), timeout=300))
        except grpc.RpcError as error:
            with lock:
                problems.append(f"stream {key}: {error.code().name} {error.details()}")
            return
        with lock:
            answers[key] = responses
            if [r.id for r in responses] != [r.id for r in requests]:
                problems.append(f"stream {key}: {len(responses)} answers, lost or reordered")

    threads = [threading.Thread(target=stream, args=(key,)) for key in range(STREAMS)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return problems, answers.get(0, [])


def test_load_nothing_lost_or_reordered_and_memory_flat(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0,
                          "--runtime", "onnx-cpu", "--artifact", "onnx-fp32",
                          "--max-queue", "256")
    texts = [f"document {i} about " + "retrieval " * (i % 13) for i in range(40)]
    try:
        stub = server.stub()
        rss = []
        for _ in range(2):
            problems, first = _round(stub, texts)
            assert problems == []
            rss.append(resident_kib(server.process.pid))
        single = vectors_of(stub.Embed(pb.EmbedRequest(inputs=[texts[5]]), timeout=30))
        assert np.array_equal(vectors_of(first[5]), single)  # streamed = a single call
        assert rss[1] <= 1.10 * rss[0], f"RSS grew from {rss[0]} to {rss[1]} KiB"
        print(f"load: {2 * STREAMS * REQUESTS} streamed requests, RSS {rss[0]} -> {rss[1]} KiB")
    finally:
        server.stop()


# -- fuzz ------------------------------------------------------------------------------------
WORDS = st.text(min_size=1, max_size=120)
TEXT = WORDS | WORDS | WORDS | st.sampled_from(["", "x", "<|endoftext|>", "🙂" * 40,
                                                "long " * 200, "\x00\ud7ff"])
ODD = st.integers(-3, 8) | st.integers(-2**31, 2**31 - 1)  # unknown enum values too


def enum(*valid: int):
    """Mostly valid values (so the happy paths are fuzzed too), sometimes anything."""
    return st.sampled_from(valid) | st.sampled_from(valid) | st.sampled_from(valid) | ODD


REQUEST = st.builds(
    lambda id_, inputs, task, dims, normalize, truncation, encoding: pb.EmbedRequest(
        id=id_, inputs=inputs, task=task, truncation=truncation, encoding=encoding,
        **({} if dims is None else {"dimensions": dims}),
        **({} if normalize is None else {"normalize": normalize})).SerializeToString(),
    st.text(max_size=20), st.lists(TEXT, min_size=1, max_size=6) | st.just([]), enum(0, 1, 2),
    st.none() | st.none() | st.none() | st.sampled_from([32, 64]) | st.integers(0, 2**32 - 1),
    st.none() | st.booleans(), enum(0, 1, 2), enum(0, 1, 2, 3, 4, 5))
PAYLOAD = REQUEST | REQUEST | REQUEST | st.binary(max_size=64)


@pytest.fixture(scope="module")
def fuzzed(bundle):
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32", max_queue=64)
    yield server
    server.stop()


def test_fuzz_every_answer_is_a_known_status(fuzzed):
    embed = fuzzed.channel.unary_unary("/embedrpc.v1.EmbeddingService/Embed",
                                       request_serializer=lambda data: data,
                                       response_deserializer=pb.EmbedResponse.FromString)
    stream = fuzzed.channel.stream_stream("/embedrpc.v1.EmbeddingService/EmbedStream",
                                          request_serializer=lambda data: data,
                                          response_deserializer=pb.EmbedResponse.FromString)
    seen = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(payload=PAYLOAD, streamed=st.lists(PAYLOAD, max_size=4), as_stream=st.booleans())
    def check(payload, streamed, as_stream):
        try:
            if as_stream:
                list(stream(iter([payload, *streamed]), timeout=30))
            else:
                embed(payload, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        seen[code] = seen.get(code, 0) + 1
        assert code in KNOWN, f"{code}: {payload!r}"

    check()
    health = health_pb2_grpc.HealthStub(fuzzed.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert len(fuzzed.stub.Embed(pb.EmbedRequest(inputs=["still fine"])).embeddings) == 1
    assert seen.get(grpc.StatusCode.OK) and seen.get(grpc.StatusCode.INVALID_ARGUMENT)
    print(f"fuzz: {sum(seen.values())} cases: " + ", ".join(
        f"{code.name} {count}" for code, count in sorted(seen.items(), key=lambda i: i[0].name)))
