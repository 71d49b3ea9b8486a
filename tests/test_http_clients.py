"""The HTTP front proven with the clients people already use, each against a live
`embedrpc serve --http-port` and each compared with sentence-transformers (the oracle): the
`openai` Python SDK (its default base64 path and encoding_format="float"), the `openai` npm
package from Node, LangChain's OpenAIEmbeddings, huggingface_hub's InferenceClient against
TEI's routes, and curl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.runtimes.selection import Choice
from embedrpc.v1 import embedding_pb2 as pb

from server_support import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["what is a vector database?", "Paris is the capital of France.", "深度学习与检索",
         "emoji 🎉 and tabs\there"]
FP32_BAR = 0.99999  # the served artifact is onnx-fp32: the oracle's own numbers


@pytest.fixture(scope="module")
def oracle(eos_checkpoint) -> SentenceTransformer:
    return SentenceTransformer(str(eos_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def server(eos_bundle):
    served = LoopbackServer(eos_bundle, http_port=0, model_aliases="embeddings, v5-small",
                            choice=Choice("onnx-cpu", "onnx-fp32", "chosen by the test"))
    yield served
    served.stop()


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server.http_port}"


def model_name(server) -> str:
    return next(iter(server.server.http.settings.model_names))


def assert_close(got, expected, bar: float = FP32_BAR) -> None:
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    assert got.shape == expected.shape
    cosines = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) \
        / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= bar, cosines
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def matryoshka(vectors: np.ndarray, dims: int) -> np.ndarray:
    prefix = vectors[:, :dims]
    return prefix / np.linalg.norm(prefix, axis=1, keepdims=True)


def test_openai_python_sdk(server, oracle, eos_bundle):
    from openai import BadRequestError, NotFoundError, OpenAI

    client = OpenAI(base_url=base_url(server) + "/v1", api_key="unused", max_retries=0)
    name = model_name(server)
    documents = oracle.encode(TEXTS, prompt_name="document")
    by_default = client.embeddings.create(model=name, input=TEXTS)  # the SDK sends base64
    got = np.array([item.embedding for item in by_default.data], np.float32)
    assert_close(got, documents)
    assert [item.index for item in by_default.data] == list(range(len(TEXTS)))
    assert by_default.model == name and by_default.object == "list"
    tokens = server.stub.Tokenize(pb.TokenizeRequest(inputs=TEXTS), timeout=10).usage
    assert by_default.usage.prompt_tokens == by_default.usage.total_tokens == tokens.input_tokens
    as_float = client.embeddings.create(model=name, input=TEXTS, encoding_format="float")
    assert np.array_equal(np.array([i.embedding for i in as_float.data], np.float32), got)
    # The task conventions: input_type (Cohere, NIM, Voyage) and task (Jina) as extra fields.
    queries = oracle.encode(TEXTS, prompt_name="query")
    for extra in ({"input_type": "query"}, {"task": "retrieval.query"}):
        asked = client.embeddings.create(model=name, input=TEXTS, extra_body=extra)
        assert_close([i.embedding for i in asked.data], queries)
    short = client.embeddings.create(model=name, input=TEXTS, dimensions=32)
    assert_close([i.embedding for i in short.data], matryoshka(documents, 32))
    # Token ids of the bare texts: the texts' vectors, exactly.
    tokenizer = Bundle(eos_bundle).tokenizer()
    ids = [tokenizer.encode([text])[0][:-1] for text in TEXTS]  # EOS off: the bare text
    from_ids = client.embeddings.create(model=name, input=ids, encoding_format="float")
    assert np.array_equal(np.array([i.embedding for i in from_ids.data], np.float32), got)
    single = client.embeddings.create(model=name, input=ids[0], encoding_format="float")
    assert np.array_equal(np.array(single.data[0].embedding, np.float32), got[0])
    # An alias answers too; an unknown model and bad values are the SDK's own errors.
    assert client.embeddings.create(model="v5-small", input=TEXTS[0]).model == "v5-small"
    with pytest.raises(NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input=TEXTS)
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    for kwargs, param in [(dict(input=""), "input"), (dict(input=[]), "input"),
                          (dict(input=["x"] * 2049), "input"),
                          (dict(input=[[1, 2], [10**7]]), "input"),
                          (dict(input="x", dimensions=33), "dimensions"),
                          (dict(input="x", extra_body={"input_type": "title"}), "input_type")]:
        with pytest.raises(BadRequestError) as bad:
            client.embeddings.create(model=name, **kwargs)
        assert bad.value.param == param and bad.value.type == "invalid_request_error", kwargs
    models = client.models.list()
    assert [m.id for m in models.data] == [name, "embeddings", "v5-small"]


def test_openai_node_sdk(server, oracle):
    node_dir = ROOT / "tests" / "node"
    if shutil.which("node") is None or not (node_dir / "node_modules" / "openai").is_dir():
        pytest.fail("node and `npm ci --prefix tests/node` are required (scripts/install.sh)")
    done = subprocess.run(["node", str(node_dir / "openai_client.mjs"), base_url(server) + "/v1",
                           model_name(server), *TEXTS], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    documents = oracle.encode(TEXTS, prompt_name="document")
    assert_close(answer["default"], documents)  # the SDK asked for base64 and decoded it
    assert np.array_equal(np.array(answer["default"], np.float32),
                          np.array(answer["float"], np.float32))
    assert_close(answer["query"], oracle.encode(TEXTS, prompt_name="query"))
    assert_close(answer["short"], matryoshka(documents, 32))
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > len(TEXTS)
    assert answer["error"] == {"status": 404, "code": "model_not_found",
                               "type": "invalid_request_error", "param": "model"}


def test_langchain_openai_embeddings(server, oracle):
    from langchain_openai import OpenAIEmbeddings

    common = dict(model=model_name(server), base_url=base_url(server) + "/v1", api_key="unused",
                  max_retries=0, check_embedding_ctx_length=False)  # texts, not tiktoken ids
    documents = OpenAIEmbeddings(**common).embed_documents(TEXTS)
    assert_close(documents, oracle.encode(TEXTS, prompt_name="document"))
    queries = OpenAIEmbeddings(**common, model_kwargs={"extra_body": {"input_type": "query"}})
    assert_close([queries.embed_query(TEXTS[0])], oracle.encode(TEXTS[:1], prompt_name="query"))


def test_huggingface_hub_inference_client(server, oracle, monkeypatch):
    """InferenceClient posts to the URL it is given: the server's root, which TEI routes to
    /embed for an embedding model, or /embed itself."""
    from huggingface_hub import InferenceClient, constants

    # The suite runs with HF_HUB_OFFLINE=1 (no hub, ever); this client talks to loopback only.
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)

    documents = oracle.encode(TEXTS, prompt_name="document")
    for url in (base_url(server), base_url(server) + "/embed"):
        client = InferenceClient(base_url=url)
        got = np.vstack([client.feature_extraction(text) for text in TEXTS])
        assert_close(got, documents)
        queried = client.feature_extraction(TEXTS[0], prompt_name="query")
        assert_close(queried, oracle.encode(TEXTS[:1], prompt_name="query"))
        short = client.feature_extraction(TEXTS[1], dimensions=32)  # re-normalised, as TEI
        assert_close(short, matryoshka(documents[1:2], 32))


def test_curl(server, oracle):
    if shutil.which("curl") is None:
        pytest.fail("curl is required (Debian package curl)")

    def curl(path: str, body: dict) -> dict:
        done = subprocess.run(["curl", "-sS", "--fail-with-body", "-X", "POST",
                               base_url(server) + path, "-H", "Content-Type: application/json",
                               "-d", json.dumps(body)], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "NO_PROXY": "127.0.0.1"})
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    documents = oracle.encode(TEXTS, prompt_name="document")
    answer = curl("/v1/embeddings", {"model": model_name(server), "input": TEXTS})
    assert_close([item["embedding"] for item in answer["data"]], documents)
    assert_close(curl("/embed", {"inputs": TEXTS}), documents)
