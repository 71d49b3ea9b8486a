"""`embedrpc export`: artifacts meet their bars against sentence-transformers, manifest is true."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.formats import BARS
from embedrpc.service.bundle.manifest import BundleError, load_manifest, sha256_file, verify_bundle
from embedrpc.service.bundle.tokenizer import Truncation
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.measure import validate_bundle
from embedrpc.service.runtimes.registry import open_runtime

from conftest import MAX_SEQ_LENGTH, exported_bundle

FRESH_TEXTS = ["how do vector databases index embeddings?", "🙂", "Ünïcödé\tand\nlines",
               "x " * 400]  # the last one is truncated to the model's limit


def st_oracle(checkpoint, padding_side="right") -> SentenceTransformer:
    """sentence-transformers loading the checkpoint the standard way (its modules.json)."""
    model = SentenceTransformer(str(checkpoint), device="cpu")
    model.tokenizer.padding_side = padding_side
    return model


def served_vectors(bundle_dir, artifact, texts, prompt_name, padding_side="right"):
    bundle = Bundle(bundle_dir)
    prompt = bundle.manifest.prompts[prompt_name]
    ids = bundle.tokenizer().encode(texts, prompt, Truncation.RIGHT)
    runtime = open_runtime(bundle, artifact, options_for(bundle, padding_side=padding_side))
    try:
        return runtime.embed(ids)
    finally:
        runtime.close()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1)
                        / np.linalg.norm(b, axis=1)))


def test_the_bars_are_the_documented_contract():
    """The one place the bars are restated: the README's parity table."""
    assert BARS == {"onnx-fp32": 0.99999, "onnx-fp16": 0.9999, "onnx-int8": 0.995,
                    "gguf-f16": 0.9999, "gguf-bf16": 0.9999, "gguf-q8_0": 0.995,
                    "gguf-q4_k_m": 0.95, "openvino-int8": 0.995, "openvino-bf16": 0.9999}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_artifacts_meet_bars_on_stored_probes(tiny_bundle, padding_side):
    results = validate_bundle(tiny_bundle, padding_side=padding_side)
    assert {r.artifact for r in results} == set(BARS)
    for result in results:
        assert result.parity.min_cosine >= BARS[result.artifact], result


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_artifacts_match_fresh_sentence_transformers(tiny_checkpoint, tiny_bundle, padding_side,
                                                     prompt_name):
    expected = st_oracle(tiny_checkpoint, padding_side).encode(FRESH_TEXTS,
                                                               prompt_name=prompt_name)
    for artifact, bar in BARS.items():
        got = served_vectors(tiny_bundle, artifact, FRESH_TEXTS, prompt_name, padding_side)
        assert min_cosine(got, expected) >= bar, artifact
    fp32 = served_vectors(tiny_bundle, "onnx-fp32", FRESH_TEXTS, prompt_name, padding_side)
    np.testing.assert_allclose(fp32, expected, atol=2e-5)


def test_prompts_change_vectors(eos_bundle):
    query = served_vectors(eos_bundle, "onnx-fp32", FRESH_TEXTS[:1], "query")
    document = served_vectors(eos_bundle, "onnx-fp32", FRESH_TEXTS[:1], "document")
    assert min_cosine(query, document) < 0.9999


def test_manifest_describes_checkpoint(tiny_checkpoint, tiny_bundle, appends_eos):
    manifest = load_manifest(tiny_bundle)
    assert manifest.architecture == "qwen3" and manifest.hidden_size == 64
    assert manifest.matryoshka_dims == [32, 64]
    assert manifest.max_input_tokens == MAX_SEQ_LENGTH
    assert manifest.prompts == {"query": "Query: ", "document": "Document: "}
    assert manifest.default_prompt_name == "document"
    assert manifest.pooling == "last" and manifest.normalize is True
    assert manifest.tokenizer.appends_eos is appends_eos
    assert manifest.source.model == str(tiny_checkpoint.resolve())
    assert manifest.source.revision is None and len(manifest.source.content_sha256) == 64
    for artifact in manifest.artifacts:
        assert artifact.parity.passed and artifact.parity.bar == BARS[artifact.name]
        assert artifact.bytes == sum((tiny_bundle / f.path).stat().st_size for f in artifact.files)
    assert {a.name for a in manifest.artifacts if a.lossy} == {"onnx-int8", "gguf-q8_0",
                                                               "gguf-q4_k_m", "openvino-int8"}


def test_manifest_checksums_match_files(eos_bundle, tmp_path):
    manifest = load_manifest(eos_bundle)
    for entry in manifest.tokenizer.files + [f for a in manifest.artifacts for f in a.files]:
        assert sha256_file(eos_bundle / entry.path) == entry.sha256
    copy = tmp_path / "copy"
    shutil.copytree(eos_bundle, copy)
    data = copy / manifest.artifact("onnx-int8").path
    data.write_bytes(data.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="onnx/int8/model.onnx: sha256 does not match"):
        verify_bundle(copy, manifest)
    verify_bundle(copy, manifest, artifacts=["onnx-fp32"])  # the others are intact


def plain_qwen3_dir(checkpoint, target, adapter: str | None = None):
    """What a loader that never runs the repo's code makes of it: a plain Qwen3Model from the
    config's JSON (remote-code keys dropped), the adapter merged by peft, saved with the
    tokenizer and sentence-transformers files: the independent oracle's directory."""
    from peft import PeftModel
    from transformers import Qwen3Config, Qwen3Model

    config = json.loads((checkpoint / "config.json").read_text())
    for key in ("auto_map", "model_type", "architectures", "task_names"):
        config.pop(key, None)
    model = Qwen3Model.from_pretrained(checkpoint, config=Qwen3Config(**config))
    if adapter:
        model = PeftModel.from_pretrained(model, checkpoint / "adapters" / adapter) \
            .merge_and_unload()
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "modules.json",
                 "config_sentence_transformers.json", "sentence_bert_config.json"):
        shutil.copy2(checkpoint / name, target / name)
    shutil.copytree(checkpoint / "1_Pooling", target / "1_Pooling")
    return target


def test_adapter_merge_matches_peft(adapter_checkpoint, tmp_path_factory, tmp_path):
    """Merging the text-matching adapter of a base-repo replica gives peft's merged model, not
    the base nor another task."""
    bundle = exported_bundle(tmp_path_factory, adapter_checkpoint, task="text-matching",
                             formats="onnx-fp32")
    assert load_manifest(bundle).source.task == "text-matching"
    expected = st_oracle(plain_qwen3_dir(adapter_checkpoint, tmp_path / "merged",
                                         "text-matching")).encode(FRESH_TEXTS,
                                                                  prompt_name="query")
    got = served_vectors(bundle, "onnx-fp32", FRESH_TEXTS, "query")
    assert min_cosine(got, expected) >= 0.99999
    for other in (None, "retrieval"):  # the base model, and another task's adapter
        vectors = st_oracle(plain_qwen3_dir(adapter_checkpoint, tmp_path / f"{other}",
                                            other)).encode(FRESH_TEXTS, prompt_name="query")
        assert min_cosine(got, vectors) < 0.999


def test_every_bundle_file_gets_the_permissions_of_a_new_file(eos_bundle):
    """A bundle exported by one user is served by another (the container's non-root user);
    onnxruntime's quantiser alone writes its data file owner-only."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (p for p in eos_bundle.rglob("*") if p.is_file()):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_parity_report_written(eos_bundle):
    report = (eos_bundle / "parity" / "report.txt").read_text()
    for artifact in BARS:
        assert artifact in report
    probes = json.loads((eos_bundle / "parity" / "probes.json").read_text())
    assert {p["prompt_name"] for p in probes} == {"query", "document"}
    assert np.load(eos_bundle / "parity" / "oracle.npy").shape == (len(probes), 64)
