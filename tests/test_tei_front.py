"""The text-embeddings-inference compatible front: a tei.v1 client (messages generated from
protos/tei/v1/tei.proto, TEI's names and numbers) calls every RPC against
`embedrpc serve --tei-compat` and gets what embedrpc.v1 gives for the same texts."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedrpc.tei.v1 import tei_pb2 as tei
from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of

TEXTS = ["what is a vector database?", "Paris is the capital of France.", "深度学习 🙂"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


@pytest.fixture(scope="module")
def server(bundle):
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32", tei_compat=True)
    yield server
    server.stop()


class TeiClient:
    """What a TEI gRPC client generated from tei.proto calls: /tei.v1.<Service>/<Method>."""

    def __init__(self, channel):
        self.channel = channel

    def unary(self, service, method, request, response):
        call = self.channel.unary_unary(f"/tei.v1.{service}/{method}",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=response.FromString)
        return call(request, timeout=30)

    def stream(self, service, method, requests, response):
        call = self.channel.stream_stream(f"/tei.v1.{service}/{method}",
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=response.FromString)
        return list(call(iter(requests), timeout=30))


def v1_vectors(server, texts, **fields) -> np.ndarray:
    return vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=texts, **fields), timeout=30))


def test_info(server):
    info = TeiClient(server.channel).unary("Info", "Info", tei.InfoRequest(), tei.InfoResponse)
    v1 = server.stub.GetInfo(pb.GetInfoRequest())
    assert (info.model_id, info.model_dtype, info.model_type) == \
        (v1.model, v1.precision, tei.MODEL_TYPE_EMBEDDING)
    assert (info.max_input_length, info.max_batch_tokens, info.max_client_batch_size) == \
        (v1.max_input_tokens, v1.max_batch_tokens, 1)
    assert info.version == v1.server_version


@pytest.mark.parametrize("prompt_name,task", [(None, pb.TASK_UNSPECIFIED),
                                              ("query", pb.TASK_QUERY),
                                              ("document", pb.TASK_DOCUMENT)])
def test_embed_equals_embedrpc(server, prompt_name, task):
    client = TeiClient(server.channel)
    expected = v1_vectors(server, TEXTS, task=task)
    for text, row in zip(TEXTS, expected, strict=True):
        request = tei.EmbedRequest(inputs=text, normalize=True)
        if prompt_name:
            request.prompt_name = prompt_name
        response = client.unary("Embed", "Embed", request, tei.EmbedResponse)
        assert np.array_equal(np.array(response.embeddings, np.float32), row)
        assert response.metadata.compute_chars == len(text)
        assert response.metadata.compute_tokens > 0 and response.metadata.total_time_ns > 0


@pytest.mark.parametrize("normalize", [True, False])
def test_embed_dimensions_equal_embedrpc_matryoshka(server, normalize):
    got = TeiClient(server.channel).unary(
        "Embed", "Embed", tei.EmbedRequest(inputs=TEXTS[0], dimensions=32, normalize=normalize),
        tei.EmbedResponse)
    expected = v1_vectors(server, TEXTS[:1], dimensions=32, normalize=normalize)
    assert np.array_equal(np.array(got.embeddings, np.float32)[None], expected)


def test_every_unset_field_takes_teis_default(server):
    """As TEI's router reads an EmbedRequest (router/src/grpc/server.rs at 0d124dc): normalize
    unset is true (TEI >= 1.9 declares it `optional`), truncate unset is false, the direction
    unset is right, prompt_name unset is the model's default."""
    client = TeiClient(server.channel)
    request = tei.EmbedRequest(inputs=TEXTS[0], dimensions=32)
    assert not request.HasField("normalize")
    got = np.array(client.unary("Embed", "Embed", request, tei.EmbedResponse).embeddings)
    assert abs(np.linalg.norm(got) - 1) < 1e-6  # a unit vector, as TEI answers
    assert np.array_equal(got.astype(np.float32)[None],
                          v1_vectors(server, TEXTS[:1], dimensions=32, normalize=True))
    assert np.array_equal(
        np.array(client.unary("Embed", "Embed", tei.EmbedRequest(inputs=TEXTS[1]),
                              tei.EmbedResponse).embeddings, np.float32)[None],
        v1_vectors(server, TEXTS[1:2], task=pb.TASK_DOCUMENT))
    assert tei.EmbedRequest.DESCRIPTOR.fields_by_name["normalize"].has_presence
    assert not tei.EmbedRequest.DESCRIPTOR.fields_by_name["truncate"].has_presence


def test_truncation_follows_truncate_and_direction(server):
    client = TeiClient(server.channel)
    long_text = "tokens of a long text " * 100
    with pytest.raises(grpc.RpcError) as error:
        client.unary("Embed", "Embed", tei.EmbedRequest(inputs=long_text), tei.EmbedResponse)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit of 128" in error.value.details()
    for direction, truncation in ((tei.TRUNCATION_DIRECTION_RIGHT, pb.TRUNCATION_RIGHT),
                                  (tei.TRUNCATION_DIRECTION_LEFT, pb.TRUNCATION_LEFT)):
        got = client.unary("Embed", "Embed", tei.EmbedRequest(
            inputs=long_text, truncate=True, truncation_direction=direction, normalize=True),
            tei.EmbedResponse)
        assert np.array_equal(np.array(got.embeddings, np.float32)[None],
                              v1_vectors(server, [long_text], truncation=truncation))


def test_embed_stream_in_order(server):
    requests = [tei.EmbedRequest(inputs=TEXTS[i % 3] + f" #{i}", normalize=True)
                for i in range(12)]
    responses = TeiClient(server.channel).stream("Embed", "EmbedStream", requests,
                                                 tei.EmbedResponse)
    expected = v1_vectors(server, [r.inputs for r in requests])
    assert np.array_equal(np.array([r.embeddings for r in responses], np.float32), expected)


def test_tokenize_and_decode_equal_embedrpc(server):
    client = TeiClient(server.channel)
    v1 = server.stub.Tokenize(pb.TokenizeRequest(inputs=TEXTS, task=pb.TASK_QUERY))
    for text, expected in zip(TEXTS, v1.results, strict=True):
        got = client.unary("Tokenize", "Tokenize", tei.EncodeRequest(
            inputs=text, add_special_tokens=True, prompt_name="query"), tei.EncodeResponse)
        assert [t.id for t in got.tokens] == list(expected.ids)
        full, plain = ("Query: " + text).encode(), [t for t in got.tokens if not t.special]
        # spans in UTF-8 bytes of prompt + text, as TEI's into_tokens gives them
        assert all(t.HasField("start") and full[t.start:t.stop].decode() == t.text
                   for t in plain)
        assert (plain[0].start, plain[-1].stop) == (0, len(full))  # spans cover the text
        assert [t.start for t in plain] == sorted(t.start for t in plain)
        assert got.tokens[-1].special and got.tokens[-1].text == "<|endoftext|>"
        decoded = client.unary("Tokenize", "Decode", tei.DecodeRequest(
            ids=[t.id for t in got.tokens], skip_special_tokens=True), tei.DecodeResponse)
        assert decoded.text == "Query: " + text
    without = client.unary("Tokenize", "Tokenize", tei.EncodeRequest(inputs=TEXTS[0]),
                           tei.EncodeResponse)
    assert not any(t.special for t in without.tokens)  # no EOS; the default prompt, as Embed
    streamed = client.stream("Tokenize", "DecodeStream", [
        tei.DecodeRequest(ids=[t.id for t in without.tokens]), tei.DecodeRequest(ids=[151643])],
        tei.DecodeResponse)
    assert [r.text for r in streamed] == ["Document: " + TEXTS[0], "<|endoftext|>"]
    with pytest.raises(grpc.RpcError) as error:
        client.unary("Tokenize", "Decode", tei.DecodeRequest(ids=[10**7]), tei.DecodeResponse)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("service,method,request_message,response,alternative", [
    ("Predict", "Predict", tei.PredictRequest(inputs="x"), tei.PredictResponse, "not a classifier"),
    ("Rerank", "Rerank", tei.RerankRequest(query="q", texts=["a"]), tei.RerankResponse,
     "rank by cosine similarity"),
    ("Embed", "EmbedSparse", tei.EmbedSparseRequest(inputs="x"), tei.EmbedSparseResponse,
     "dense embedding model: use Embed"),
    ("Embed", "EmbedAll", tei.EmbedAllRequest(inputs="x"), tei.EmbedAllResponse,
     "per-token vectors are not served"),
])
def test_what_an_embedder_cannot_do_is_unimplemented_with_the_alternative(
        server, service, method, request_message, response, alternative):
    with pytest.raises(grpc.RpcError) as error:
        TeiClient(server.channel).unary(service, method, request_message, response)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"tei.v1 {method} is not served by embedrpc: " in error.value.details()
    assert alternative in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        TeiClient(server.channel).stream(service, f"{method}Stream", [request_message], response)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_entries_and_off_by_default(server, bundle):
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("tei.v1.Info", "tei.v1.Embed", "tei.v1.Tokenize",
                    "embedrpc.v1.EmbeddingService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    plain = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32")
    try:
        with pytest.raises(grpc.RpcError) as error:
            TeiClient(plain.channel).unary("Embed", "Embed", tei.EmbedRequest(inputs="x"),
                                           tei.EmbedResponse)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        plain.stop()
