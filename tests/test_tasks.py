"""One bundle, one backbone, the four tasks of the base repo applied at run time (`embedrpc
export BASE --tasks all`): parity recorded for every (artifact, task) pair, and one server
answering each task on onnx-cpu, openvino-cpu and llama.cpp within its bar of an independent
oracle (peft merges the task's adapter, sentence-transformers embeds)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from embedrpc.service.bundle import layout
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.formats import BARS
from embedrpc.service.bundle.manifest import load_manifest
from embedrpc.service.runtimes.selection import Choice
from embedrpc.v1 import embedding_pb2 as pb

from conftest import exported_bundle
from server_support import LoopbackServer, vectors_of
from test_export import FRESH_TEXTS, min_cosine, plain_qwen3_dir, st_oracle

pytestmark = pytest.mark.heavy

TASKS = ["retrieval", "text-matching", "clustering", "classification"]  # the config's order
SERVED = [Choice("onnx-cpu", "onnx-fp32", "test"), Choice("onnx-cpu", "onnx-int8", "test"),
          Choice("openvino-cpu", "openvino-int8", "test"),
          Choice("llamacpp", "gguf-q8_0", "test")]


@pytest.fixture(scope="module")
def four_task_bundle(tmp_path_factory, adapter_checkpoint):
    return exported_bundle(tmp_path_factory, adapter_checkpoint, tasks="all",
                           formats=",".join(c.artifact for c in SERVED))


@pytest.fixture(scope="module")
def oracles(adapter_checkpoint, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each task's vectors for FRESH_TEXTS as queries, from peft's merge of its adapter."""
    found = {}
    for task in TASKS:
        merged = plain_qwen3_dir(adapter_checkpoint, tmp_path_factory.mktemp(task), task)
        found[task] = st_oracle(merged).encode(FRESH_TEXTS, prompt_name="query")
    return found


def test_the_bundle_holds_every_task_once(four_task_bundle):
    manifest = load_manifest(four_task_bundle)
    Bundle(four_task_bundle).verify()  # every artifact's and adapter's sha256
    assert manifest.tasks == TASKS and manifest.default_task == "retrieval"
    assert [a.task for a in manifest.adapters] == TASKS
    for adapter in manifest.adapters:  # ONNX/OpenVINO's adapter file and llama.cpp's LoRA GGUF
        assert sorted(f.path for f in adapter.files) == [
            f"adapters/{adapter.task}/lora.gguf", f"adapters/{adapter.task}/lora.onnx_adapter"]
    for artifact in manifest.artifacts:  # the backbone once per artifact, parity per task
        assert set(artifact.task_parity) == set(TASKS)
        for parity in artifact.task_parity.values():
            assert parity.passed and parity.min_cosine >= BARS[artifact.name]
        assert artifact.parity.min_cosine == min(
            p.min_cosine for p in artifact.task_parity.values())
    for task in TASKS:
        assert (four_task_bundle / layout.oracle_file(task)).is_file()


def test_the_oracles_differ_by_task(oracles):
    """Otherwise the served tests below could not tell one task's adapter from another's."""
    for task in TASKS[1:]:
        assert min_cosine(oracles[task], oracles["retrieval"]) < 0.99


@pytest.mark.parametrize("choice", SERVED, ids=[c.artifact for c in SERVED])
def test_one_server_answers_every_task(four_task_bundle, oracles, choice):
    server = LoopbackServer(four_task_bundle, choice=choice)
    try:
        info = server.stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        assert list(info.tasks) == TASKS and info.task == "retrieval"
        bar = BARS[choice.artifact]

        def embed(adapter: str) -> np.ndarray:
            return vectors_of(server.stub.Embed(pb.EmbedRequest(
                inputs=FRESH_TEXTS, task=pb.TASK_QUERY, adapter=adapter,
                truncation=pb.TRUNCATION_RIGHT), timeout=60))

        answers = {task: embed(task) for task in TASKS}
        for task in TASKS:
            assert min_cosine(answers[task], oracles[task]) >= bar, task
            others = [t for t in TASKS if t != task]
            assert all(min_cosine(answers[task], oracles[t]) < bar for t in others), task
        assert np.array_equal(embed(""), answers["retrieval"])  # unset: the default task

        # Tasks interleaved in one stream: each answer in order, each with its own task's vector.
        requests = [pb.EmbedRequest(id=f"r{i}", inputs=[FRESH_TEXTS[i % 3]], task=pb.TASK_QUERY,
                                    adapter=TASKS[i % 4]) for i in range(12)]
        replies = list(server.stub.EmbedStream(iter(requests), timeout=60))
        assert [r.id for r in replies] == [r.id for r in requests]
        for i, reply in enumerate(replies):
            expected = answers[TASKS[i % 4]][i % 3]
            assert min_cosine(vectors_of(reply), expected[None]) >= bar, i

        with pytest.raises(grpc.RpcError) as refused:
            server.stub.Embed(pb.EmbedRequest(inputs=["x"], adapter="sentiment"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no task 'sentiment'" in refused.value.details()
        assert "text-matching" in refused.value.details()
        counted = {task: server.metric("embedrpc_task_inputs_total", task=task) for task in TASKS}
        assert counted == {"retrieval": 4 + 4 + 3, "text-matching": 4 + 3, "clustering": 4 + 3,
                           "classification": 4 + 3}
    finally:
        server.stop()


def test_openai_model_names_choose_the_task(four_task_bundle, oracles):
    """On the OpenAI front a task is a model: "<served name>-<task>", as the `-<task>` repos
    are named; Jina's `task` field names one too."""
    from openai import OpenAI

    server = LoopbackServer(four_task_bundle, http_port=0, served_model_name="v5-small",
                            choice=SERVED[0])
    try:
        url = f"http://127.0.0.1:{server.server.http_port}/v1"
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        models = sorted(m.id for m in client.models.list())
        assert models == sorted(["v5-small", *(f"v5-small-{t}" for t in TASKS)])
        for task in TASKS:
            got = client.embeddings.create(model=f"v5-small-{task}", input=FRESH_TEXTS,
                                           extra_body={"input_type": "query", "truncate": True})
            assert min_cosine(np.array([d.embedding for d in got.data]),
                              oracles[task]) >= BARS["onnx-fp32"], task
        plain = client.embeddings.create(model="v5-small", input=FRESH_TEXTS,
                                         extra_body={"task": "clustering.query", "truncate": True})
        assert min_cosine(np.array([d.embedding for d in plain.data]),
                          oracles["clustering"]) >= BARS["onnx-fp32"]
        request = urllib.request.Request(
            f"{url}/embeddings", method="POST", headers={"content-type": "application/json"},
            data=json.dumps({"model": "v5-small-retrieval", "input": "x",
                             "task": "clustering"}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
        assert "the model names task 'retrieval'" in json.loads(
            refused.value.read())["error"]["message"]
    finally:
        server.stop()


def test_a_merged_bundle_refuses_another_task(eos_bundle):
    server = LoopbackServer(eos_bundle, choice=SERVED[0])
    try:
        assert list(server.stub.GetInfo(pb.GetInfoRequest(), timeout=10).tasks) == []
        with pytest.raises(grpc.RpcError) as refused:
            server.stub.Embed(pb.EmbedRequest(inputs=["x"], adapter="clustering"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop()
