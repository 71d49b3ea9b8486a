"""GGUF artifacts: llama.cpp metadata, vocabulary, pooling, parity and batching."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from embedrpc.export.oracle import probe_texts
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.formats import BARS
from embedrpc.service.bundle.manifest import load_manifest
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.measure import validate_bundle
from embedrpc.service.runtimes.registry import open_runtime
from fixtures.random_checkpoint import ENDOFTEXT_ID

from conftest import cached_checkpoint, exported_bundle
from gguf_support import gguf_metadata

GGUF_BARS = {name: bar for name, bar in BARS.items() if name.startswith("gguf-")}


@pytest.fixture(scope="module")
def f16_runtime(tiny_bundle):
    bundle = Bundle(tiny_bundle)
    runtime = open_runtime(bundle, "gguf-f16", options_for(bundle, max_batch_tokens=512))
    yield runtime
    runtime.close()


def test_metadata_pools_last_and_follows_the_tokenizer(tiny_bundle, appends_eos):
    manifest = load_manifest(tiny_bundle)
    for name in GGUF_BARS:  # read by llama.cpp's own loader, as the runtime reads them
        fields = gguf_metadata(tiny_bundle / manifest.artifact(name).path)
        assert fields["general.architecture"] == "qwen3"
        assert fields["qwen3.pooling_type"] == str(int(gguf.PoolingType.LAST))
        assert fields["qwen3.embedding_length"] == "64"
        assert fields["qwen3.block_count"] == "2"
        assert fields["qwen3.attention.head_count_kv"] == "2"
        assert fields["qwen3.attention.key_length"] == "16"
        assert fields["qwen3.context_length"] == str(manifest.max_input_tokens)
        assert fields["tokenizer.ggml.model"] == "gpt2"
        assert fields["tokenizer.ggml.pre"] == "qwen2"
        assert fields["tokenizer.ggml.add_bos_token"] == "false"
        assert fields["tokenizer.ggml.add_eos_token"] == str(appends_eos).lower()
        assert fields["tokenizer.ggml.eos_token_id"] == str(ENDOFTEXT_ID)
        assert fields["tokenizer.ggml.padding_token_id"] == str(manifest.tokenizer.pad_token_id)


def test_token_types_mark_control_tokens(eos_bundle):
    reader = gguf.GGUFReader(eos_bundle / load_manifest(eos_bundle).artifact("gguf-f16").path)
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == len(types) == 151936
    assert tokens[ENDOFTEXT_ID] == "<|endoftext|>"
    assert types[ENDOFTEXT_ID] == gguf.TokenType.CONTROL
    assert types[151657] == gguf.TokenType.USER_DEFINED  # <tool_call>: added, not special
    assert types[200] == gguf.TokenType.NORMAL
    assert types[151935] == gguf.TokenType.UNUSED  # embedding row past the vocabulary


@pytest.mark.parametrize("prompt", ["", "Query: ", "Document: "])
def test_llama_cpp_vocab_gives_hf_ids(tiny_bundle, f16_runtime, prompt):
    tokenizer = Bundle(tiny_bundle).tokenizer(max_input_tokens=10_000)
    texts = probe_texts(100, tokenizer.count_tokens)
    for text in texts:
        assert f16_runtime.tokenize(prompt + text) == tokenizer.encode([text], prompt)[0], text


def test_artifacts_meet_bars(tiny_bundle):
    results = validate_bundle(tiny_bundle, list(GGUF_BARS))
    for result in results:
        assert result.parity.min_cosine >= GGUF_BARS[result.artifact], result


@pytest.mark.heavy
def test_q4_k_m_on_k256_widths(tmp_path_factory):
    """Widths that are multiples of 256 get real Q4_K blocks (tiny widths fall back)."""
    checkpoint = cached_checkpoint("tiny-k256", True)
    bundle = exported_bundle(tmp_path_factory, checkpoint, formats="gguf-q4_k_m")
    manifest = load_manifest(bundle)
    artifact = manifest.artifact("gguf-q4_k_m")
    assert artifact.lossy and artifact.parity.min_cosine >= 0.95
    reader = gguf.GGUFReader(bundle / artifact.path)
    kinds = {t.tensor_type for t in reader.tensors}
    assert gguf.GGMLQuantizationType.Q4_K in kinds
    (result,) = validate_bundle(bundle)
    assert result.passed


def test_mixed_batch_equals_one_at_a_time(tiny_bundle, f16_runtime):
    """Packing sequences into one decode changes nothing but float rounding: llama.cpp picks
    matmul micro-kernels by a row's place in the batch (~1e-4 per component on F16)."""
    tokenizer = Bundle(tiny_bundle).tokenizer()
    texts = ["short", "a somewhat longer sentence about vector search " * 3, "中文", "x " * 50]
    sequences = tokenizer.encode(texts, "Query: ")
    together = f16_runtime.embed_batch(sequences)
    alone = np.vstack([f16_runtime.embed_batch([s]) for s in sequences])
    np.testing.assert_allclose(together, alone, atol=1e-3)
    assert np.min(np.sum(together * alone, axis=1)) >= 0.99999
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(f16_runtime.embed_batch([sequences[0]] * 3), np.vstack([alone[0]] * 3))
    bundle = Bundle(tiny_bundle)
    small = open_runtime(bundle, "gguf-f16", options_for(bundle, max_batch_tokens=64))
    try:
        planned = small.embed(sequences[::-1])[::-1]  # several decodes, order restored
    finally:
        small.close()
    assert np.min(np.sum(planned * alone, axis=1)) >= 0.99999


def test_over_budget_is_an_error_not_a_truncation(eos_bundle):
    bundle = Bundle(eos_bundle)
    runtime = open_runtime(bundle, "gguf-q8_0", options_for(bundle, max_batch_tokens=32))
    # never more sequences than tokens in a context (llama.cpp aborts the process otherwise)
    assert runtime.policy.max_sequences == runtime.context_sequences == 32
    try:
        with pytest.raises(ValueError, match="sequence of 40 tokens is over this runtime's "
                                             "limit of 32"):
            runtime.embed([[100] * 40])
        assert runtime.embed([[100] * 32]).shape == (1, 64)
    finally:
        runtime.close()


def test_an_input_longer_than_a_pass_runs_alone_in_passes(eos_bundle):
    """Passes are short (attention spans one pass); a longer input still gets its full
    context: decoded a pass at a time into a context of its own, it equals one long pass."""
    bundle = Bundle(eos_bundle)
    tokenizer = bundle.tokenizer(max_input_tokens=400)
    long_text = tokenizer.encode(["A long document about many things, " * 40],
                                 bundle.manifest.prompts["document"])[0][:300]
    short = tokenizer.encode(["a short query"], bundle.manifest.prompts["query"])[0]
    in_passes = open_runtime(bundle, "gguf-f16", options_for(bundle,
        max_batch_tokens=64, max_input_tokens=400))
    one_pass = open_runtime(bundle, "gguf-f16", options_for(bundle, max_batch_tokens=512))
    try:
        assert in_passes.pass_tokens == 64 and in_passes.max_tokens == 400
        vectors = in_passes.embed([short, long_text, short])
        reference = one_pass.embed([short, long_text, short])
    finally:
        in_passes.close()
        one_pass.close()
    assert np.min(np.sum(vectors * reference, axis=1)) >= 0.99999
    last_pass_only = tail_vector(bundle, long_text, 300 % 64)
    assert float(vectors[1] @ last_pass_only) < 0.999  # the whole input counted


def tail_vector(bundle, sequence, tokens):
    """The vector of only the last `tokens` of `sequence` (as if earlier passes were lost)."""
    runtime = open_runtime(bundle, "gguf-f16", options_for(bundle, max_batch_tokens=512))
    try:
        return runtime.embed([sequence[-tokens:]])[0]
    finally:
        runtime.close()
