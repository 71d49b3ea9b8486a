"""The published checkpoints as they are, replicated with random weights: the base repo (its own
`jina_embeddings_v5` config pointing at Python code that must never run, four LoRA adapters)
and the merged `-<task>` repos (declaring `qwen3` or `jina_embeddings_v5`): exported with every
artifact within its bar, GGUF rope base 3.5e6, and served."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embedrpc.service.bundle.formats import BARS
from embedrpc.service.bundle.manifest import load_manifest
from embedrpc.v1 import embedding_pb2 as pb
from fixtures.random_checkpoint import JINA_CODE_MODULES, jina_base_config

from conftest import cached_checkpoint, exported_bundle
from gguf_support import gguf_metadata
from server_support import LoopbackServer, vectors_of
from test_export import FRESH_TEXTS, min_cosine, plain_qwen3_dir, st_oracle

pytestmark = pytest.mark.heavy

ROPE_BASE = 3_500_000.0


@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory, adapter_checkpoint):
    return exported_bundle(tmp_path_factory, adapter_checkpoint, task="text-matching")


@pytest.fixture(scope="module")
def merged_bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def rope_bases(bundle) -> dict[str, float]:
    manifest = load_manifest(bundle)
    return {a.name: float(gguf_metadata(bundle / a.path)["qwen3.rope.freq_base"])
            for a in manifest.artifacts if a.format == "gguf"}


def test_base_replica_is_laid_out_as_published(adapter_checkpoint):
    config = json.loads((adapter_checkpoint / "config.json").read_text())
    assert config["model_type"] == "jina_embeddings_v5"
    assert config["architectures"] == ["JinaEmbeddingsV5Model"]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    assert config["task_names"] == ["retrieval", "text-matching", "clustering", "classification"]
    assert config["rope_theta"] == ROPE_BASE and config["tie_word_embeddings"] is True
    assert config["vocab_size"] == 151936
    for module in JINA_CODE_MODULES:  # present, and they raise if anything ever imports them
        assert "raise RuntimeError" in (adapter_checkpoint / f"{module}.py").read_text()
    for task in config["task_names"]:
        adapter = json.loads((adapter_checkpoint / "adapters" / task /
                              "adapter_config.json").read_text())
        assert (adapter["peft_type"], adapter["task_type"]) == ("LORA", "FEATURE_EXTRACTION")
        assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (32, 32, 0.1)
        assert sorted(adapter["target_modules"]) == sorted(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        assert adapter["base_model_name_or_path"] == "jinaai/jina-embeddings-v5-text-small"
        assert not adapter.get("use_dora") and not adapter.get("modules_to_save")


def test_base_repo_export_meets_every_bar(base_bundle):
    manifest = load_manifest(base_bundle)
    assert (manifest.source.task, manifest.architecture) == ("text-matching", "qwen3")
    assert {a.name for a in manifest.artifacts} == set(BARS)
    for artifact in manifest.artifacts:
        assert artifact.parity.passed and artifact.parity.min_cosine >= BARS[artifact.name]


def test_gguf_rope_base_is_the_models(base_bundle, merged_bundle):
    for bundle in (base_bundle, merged_bundle):
        assert rope_bases(bundle) == {name: ROPE_BASE for name in BARS if name.startswith("gguf")}


def test_base_repo_bundle_serves_the_tasks_vectors(base_bundle, adapter_checkpoint, tmp_path):
    expected = st_oracle(plain_qwen3_dir(adapter_checkpoint, tmp_path / "oracle",
                                         "text-matching")).encode(FRESH_TEXTS,
                                                                  prompt_name="query")
    server = LoopbackServer(base_bundle)
    try:
        info = server.stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        got = vectors_of(server.stub.Embed(pb.EmbedRequest(inputs=FRESH_TEXTS, task=pb.TASK_QUERY,
                                                           truncation=pb.TRUNCATION_RIGHT),
                                           timeout=30))
    finally:
        server.stop()
    assert info.task == "text-matching"
    assert min_cosine(got, expected) >= BARS[info.artifact]


def test_merged_repo_declaring_jina_embeddings_v5(tmp_path, tmp_path_factory,
                                                   qwen3_tokenizer_json):
    merged = cached_checkpoint("tiny", True)
    replica = tmp_path / "jina-embeddings-v5-text-small-retrieval"
    shutil.copytree(merged, replica)
    (replica / "config.json").write_text(json.dumps(jina_base_config("tiny")))
    bundle = exported_bundle(tmp_path_factory, replica, formats="onnx-fp32,gguf-f16")
    manifest = load_manifest(bundle)
    assert (manifest.source.task, manifest.architecture) == ("retrieval", "qwen3")
    assert all(a.parity.passed for a in manifest.artifacts)
    assert rope_bases(bundle) == {"gguf-f16": ROPE_BASE}
    # The same weights as the qwen3-declaring merged repo: the same vectors.
    same = np.load(bundle / "parity" / "oracle.npy")
    plain = exported_bundle(tmp_path_factory, merged, formats="onnx-fp32,gguf-f16")
    np.testing.assert_allclose(same, np.load(plain / "parity" / "oracle.npy"), atol=1e-6)
