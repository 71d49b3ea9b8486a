"""The HTTP front's contract, beyond what the real clients show (tests/test_http_clients.py):
TEI's routes with TEI's defaults and error shapes, OpenAI's error shapes and statuses, the
body limit, backpressure, API keys, TLS and mTLS with the gRPC certificates, health, the drain,
and a fuzz of bad bodies that never gets a 5xx or loses a request."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import ssl
import threading

import httpx
import numpy as np
import pytest
from certificates import CertificateAuthority
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_worker_faults import wait_for

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.runtimes.selection import Choice

from server_support import LoopbackServer, SlowReadingProxy, vectors_of

FP32 = Choice("onnx-cpu", "onnx-fp32", "chosen by the test")
TEXTS = ["what is a vector database?", "深度学习与检索 🎉"]


@pytest.fixture(scope="module")
def server(eos_bundle):
    served = LoopbackServer(eos_bundle, http_port=0, choice=FP32, max_queue=64)
    yield served
    served.stop()


def url(server, path: str = "") -> str:
    return f"http://127.0.0.1:{server.server.http_port}{path}"


def post(server, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url(server, path), content=content, timeout=30,
                      headers={"content-type": "application/json"}, **kwargs)


def grpc_vectors(server, texts, **fields):
    from embedrpc.v1 import embedding_pb2 as pb

    return vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=texts, **fields), timeout=30))


# -- TEI's HTTP API ------------------------------------------------------------------------------
def test_tei_embed_defaults_are_teis(server):
    from embedrpc.v1 import embedding_pb2 as pb

    full = grpc_vectors(server, TEXTS)
    assert np.array_equal(np.array(post(server, "/embed", {"inputs": TEXTS}).json(), np.float32),
                          full)
    one = post(server, "/embed", {"inputs": TEXTS[0]}).json()  # one text: still a list of lists
    assert len(one) == 1 and np.array_equal(np.array(one, np.float32), full[:1])
    short = np.array(post(server, "/embed", {"inputs": TEXTS, "dimensions": 32}).json())
    assert np.allclose(np.linalg.norm(short, axis=1), 1, atol=1e-6)  # normalize: true unless set
    raw = np.array(post(server, "/embed", {"inputs": TEXTS, "dimensions": 32,
                                            "normalize": False}).json(), np.float32)
    assert np.array_equal(raw, full[:, :32])
    queried = post(server, "/embed", {"inputs": TEXTS, "prompt_name": "query"}).json()
    assert np.array_equal(np.array(queried, np.float32),
                          grpc_vectors(server, TEXTS, task=pb.TASK_QUERY))
    long_text = "retrieval " * 400  # over the 128-token limit: truncated, TEI's auto-truncate
    assert post(server, "/embed", {"inputs": long_text}).status_code == 200
    left = post(server, "/embed", {"inputs": long_text, "truncation_direction": "Left"})
    assert left.status_code == 200
    refused = post(server, "/embed", {"inputs": long_text, "truncate": False})
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
    tokens = Bundle(server.server.bundle.root).tokenizer().encode([TEXTS[0]])[0][:-1]
    mixed = post(server, "/embed", {"inputs": [tokens, TEXTS[1]]}).json()
    assert np.array_equal(np.array(mixed, np.float32), full)  # token ids: as their text


@pytest.mark.parametrize("body,status,error_type", [
    ({"inputs": ""}, 400, "Empty"), ({"inputs": []}, 400, "Empty"),
    ({"inputs": [""]}, 400, "Empty"), ({"inputs": 5}, 422, "Validation"),
    ({"inputs": "x", "normalize": None}, 422, "Validation"),
    ({"inputs": "x", "dimensions": 33}, 422, "Validation"),
    ({"inputs": "x", "prompt_name": "title"}, 422, "Validation"),
    ({"inputs": "x", "truncation_direction": "up"}, 422, "Validation"),
    ({"inputs": [[10**7]]}, 422, "Validation"), (b"{not json", 400, "Validation"),
    ({"inputs": ["x"] * 65}, 422, "Validation"),  # over --max-queue 64
])
def test_tei_errors_have_teis_status_and_shape(server, body, status, error_type):
    response = post(server, "/embed", body)
    assert (response.status_code, response.json()["error_type"]) == (status, error_type)
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_tei_tokenize_decode_info_health(server):
    text = "Query: 深度学习"
    tokens = post(server, "/tokenize", {"inputs": "深度学习", "prompt_name": "query"}).json()
    (only,) = tokens
    plain = [t for t in only if not t["special"]]
    data = text.encode()
    assert all(data[t["start"]:t["stop"]].decode() == t["text"] for t in plain)  # UTF-8 bytes
    assert (plain[0]["start"], plain[-1]["stop"]) == (0, len(data))
    assert only[-1] == {"id": 151643, "text": "<|endoftext|>", "special": True, "start": None,
                        "stop": None}
    ids = [t["id"] for t in only]
    assert post(server, "/decode", {"ids": ids}).json() == [text]  # special tokens skipped
    assert post(server, "/decode", {"ids": [ids, ids[:1]],
                                    "skip_special_tokens": False}).json()[0].endswith(
        "<|endoftext|>")
    info = httpx.get(url(server, "/info")).json()
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["max_input_length"] == 128 and info["auto_truncate"] is True
    assert info["served_model_name"] == info["model_id"]
    health = httpx.get(url(server, "/health"))
    assert (health.status_code, health.content) == (200, b"")


@pytest.mark.parametrize("path", ["/embed_all", "/embed_sparse", "/rerank", "/predict",
                                  "/similarity"])
def test_what_an_embedder_cannot_do_is_501_naming_the_alternative(server, path):
    response = post(server, path, {"inputs": "x"})
    assert response.status_code == 501
    assert response.json()["error"].startswith(f"{path} is not served by embedrpc: ")
    assert "/embed" in response.json()["error"]


# -- OpenAI's error shapes -------------------------------------------------------------------
def openai_error(response: httpx.Response) -> dict:
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_openai_errors(server):
    name = next(iter(server.server.http.settings.model_names))
    cases = [({"input": "x"}, 400, "model"), ({"model": name}, 400, "input"),
             ({"model": name, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
             ({"model": name, "input": ["x", 1]}, 400, "input"),
             ({"model": name, "input": [[True]]}, 400, "input"),
             ({"model": name, "input": "x", "dimensions": "32"}, 400, "dimensions"),
             ({"model": name, "input": "x", "truncate": "yes"}, 400, "truncate"),
             (["not", "an", "object"], 400, None)]
    for body, status, param in cases:
        response = post(server, "/v1/embeddings", body)
        assert response.status_code == status, (body, response.text)
        assert openai_error(response)["param"] == param, body
    malformed = post(server, "/v1/embeddings", b'{"model": ')
    assert malformed.status_code == 400 and openai_error(malformed)["type"] == \
        "invalid_request_error"
    missing = httpx.get(url(server, "/v1/nowhere"))
    assert missing.status_code == 404 and openai_error(missing)
    wrong_method = httpx.get(url(server, "/v1/embeddings"))
    assert wrong_method.status_code == 405 and openai_error(wrong_method)
    base64_answer = post(server, "/v1/embeddings", {"model": name, "input": TEXTS,
                                                    "encoding_format": "base64"}).json()
    decoded = np.vstack([np.frombuffer(base64.b64decode(item["embedding"]), "<f4")
                         for item in base64_answer["data"]])
    assert np.array_equal(decoded, grpc_vectors(server, TEXTS))


def test_a_body_over_the_limit_is_413(eos_bundle):
    server = LoopbackServer(eos_bundle, http_port=0, choice=FP32, max_message_bytes=4096)
    try:
        body = {"model": next(iter(server.server.http.settings.model_names)), "input": "x" * 5000}
        response = post(server, "/v1/embeddings", body)
        assert response.status_code == 413
        assert openai_error(response)["code"] == "request_too_large"
        tei = post(server, "/embed", {"inputs": "x" * 5000})
        assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"
        assert post(server, "/embed", {"inputs": "fits"}).status_code == 200  # still serving
    finally:
        server.stop()


def test_a_full_queue_is_429_with_retry_after(eos_bundle):
    server = LoopbackServer(eos_bundle, gated=True, http_port=0, choice=FP32, max_queue=1)
    try:
        server.runtime.gate.clear()
        server.runtime.entered.clear()
        held = threading.Thread(target=post, args=(server, "/embed", {"inputs": "first"}))
        held.start()
        assert server.runtime.entered.wait(10)  # "first" is in the runtime; the queue is empty
        waiting = threading.Thread(target=post, args=(server, "/embed", {"inputs": "second"}))
        waiting.start()
        wait_for(lambda: server.server.scheduler.queued == 1)  # the queue is full now
        busy = post(server, "/embed", {"inputs": "third"})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error_type"] == "Overloaded"
        name = next(iter(server.server.http.settings.model_names))
        openai_busy = post(server, "/v1/embeddings", {"model": name, "input": "third"})
        assert openai_busy.status_code == 429 and openai_busy.headers["retry-after"] == "1"
        assert openai_error(openai_busy)["code"] == "rate_limit_exceeded"
    finally:
        server.runtime.gate.set()
        held.join(30)
        waiting.join(30)
        server.stop()


def test_api_keys_and_tls_are_the_grpc_fronts(eos_bundle, tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    server_pem = ca.issue("server", "localhost", server=True)
    keys = tmp_path / "keys"
    keys.write_text("http-key-0123456789\n")
    server = LoopbackServer(eos_bundle, http_port=0, choice=FP32, api_key_file=str(keys),
                            tls_cert=str(server_pem.cert), tls_key=str(server_pem.key),
                            tls_client_ca=str(ca.pem.cert))
    client = ca.issue("client", "search-service", server=False)
    base = f"https://localhost:{server.server.http_port}"
    try:
        trusted = ssl.create_default_context(cafile=str(ca.pem.cert))
        trusted.load_cert_chain(str(client.cert), str(client.key))
        with httpx.Client(verify=trusted, timeout=30) as https:
            name = next(iter(server.server.http.settings.model_names))
            refused = https.post(base + "/v1/embeddings", json={"model": name, "input": "x"})
            assert refused.status_code == 401
            assert openai_error(refused)["code"] == "invalid_api_key"
            assert "http-key-0123456789" not in refused.text
            tei_refused = https.post(base + "/embed", json={"inputs": "x"})
            assert tei_refused.status_code == 401
            assert tei_refused.json()["error_type"] == "Unauthorized"
            assert https.get(base + "/health").status_code == 200  # probes need no key
            key = {"authorization": "Bearer http-key-0123456789"}
            assert https.post(base + "/embed", json={"inputs": "x"}, headers=key).status_code \
                == 200
        anonymous = ssl.create_default_context(cafile=str(ca.pem.cert))
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)), \
                httpx.Client(verify=anonymous, timeout=10) as no_client_certificate:
            no_client_certificate.get(base + "/health")  # mTLS: no certificate, no answer
        with pytest.raises(httpx.ConnectError), httpx.Client(timeout=10) as untrusting:
            untrusting.get(base + "/health")  # the server's CA is not the system's
    finally:
        server.stop()


def test_health_follows_the_server_and_the_drain(eos_bundle):
    server = LoopbackServer(eos_bundle, gated=True, http_port=0, choice=FP32)
    try:
        server.runtime.fail = True
        for _ in range(3):
            assert post(server, "/embed", {"inputs": "x"}).status_code == 424  # TEI: Backend
        wait_for(lambda: httpx.get(url(server, "/health")).status_code == 503)
        assert httpx.get(url(server, "/health")).json() == {"error": "unhealthy",
                                                            "error_type": "Unhealthy"}
        server.runtime.fail = False
        assert post(server, "/embed", {"inputs": "x"}).status_code == 200
        wait_for(lambda: httpx.get(url(server, "/health")).status_code == 200)
        server.server.drain.draining = True  # what a stop begins with
        refused = post(server, "/embed", {"inputs": "x"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert httpx.get(url(server, "/health")).status_code == 503
        server.server.drain.draining = False
    finally:
        server.stop()



def test_a_stopping_server_delivers_a_large_http_answer_to_a_slow_reader(eos_bundle):
    """What tests/test_server.py checks of gRPC, on the HTTP front: an answer finished during the
    stop reaches a client that reads it slowly (through a loaded proxy), whole."""
    server = LoopbackServer(eos_bundle, gated=True, http_port=0, choice=FP32, max_queue=4096,
                            cache_bytes=0)
    proxy = SlowReadingProxy(server.server.http_port)
    texts = [f"text {i}" for i in range(2000)]  # about 1.5 MB of JSON
    model = next(iter(server.server.http.settings.model_names))
    server.runtime.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"http://127.0.0.1:{proxy.port}/v1/embeddings",
                                json={"input": texts, "model": model}, timeout=60)
        assert server.runtime.entered.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(30), server.loop)
        wait_for(lambda: server.server.drain.draining)
        server.runtime.gate.set()
        try:
            answer = in_flight.result(60)
            assert answer.status_code == 200
            assert [item["index"] for item in answer.json()["data"]] == list(range(len(texts)))
            stopping.result(60)
        finally:
            proxy.close()
            server.loop.call_soon_threadsafe(server.loop.stop)


# -- fuzz ------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12),
                                                                      children, max_size=5),
    max_leaves=20)
FIELDS = {"/v1/embeddings": ["model", "input", "encoding_format", "dimensions", "input_type",
                             "task", "user", "truncate", "truncation_direction"],
          "/embed": ["inputs", "normalize", "truncate", "truncation_direction", "prompt_name",
                     "dimensions"],
          "/tokenize": ["inputs", "add_special_tokens", "prompt_name"],
          "/decode": ["ids", "skip_special_tokens"]}


@st.composite
def bodies(draw):
    path = draw(st.sampled_from(sorted(FIELDS)))
    kind = draw(st.sampled_from(["fields", "fields", "fields", "raw", "ids"]))
    if kind == "raw":
        return path, draw(st.binary(max_size=200))
    body = {name: draw(JSON_VALUES) for name in draw(st.lists(st.sampled_from(FIELDS[path]),
                                                              unique=True))}
    if kind == "ids":  # token ids, in and out of the vocabulary
        body["input" if path == "/v1/embeddings" else "inputs"] = draw(
            st.lists(st.integers(-5, 160_000), min_size=0, max_size=6))
    return path, json.dumps(body).encode()


def counted(server) -> float:
    """HTTP requests the server's metrics counted on the fuzzed routes, whatever the code."""
    (family,) = [f for f in server.server.metrics.registry.collect()
                 if f.name == "embedrpc_requests"]
    return sum(sample.value for sample in family.samples if sample.name.endswith("_total")
               and sample.labels["method"] in {f"POST {path}" for path in FIELDS})


@pytest.mark.heavy
def test_fuzzed_bodies_get_a_4xx_in_shape_and_lose_nothing(server):
    served = []
    client = httpx.Client(timeout=30)
    before = counted(server)

    @settings(max_examples=2000, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(bodies())
    def check(case):
        path, body = case
        response = client.post(url(server, path), content=body)
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            shape = response.json()
            assert set(shape) == ({"error"} if path.startswith("/v1") else
                                  {"error", "error_type"}), shape
        served.append(response.status_code)

    check()
    client.close()
    assert len(served) >= 2000
    assert counted(server) - before == len(served)  # every request answered and counted
    assert httpx.get(url(server, "/health")).status_code == 200
    assert post(server, "/embed", {"inputs": "still here"}).status_code == 200
