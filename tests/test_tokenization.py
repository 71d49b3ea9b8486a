"""Token ids: the serving tokenizer must reproduce Hugging Face's exactly, truncation keeps EOS."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from embedrpc.export.oracle import probe_texts
from embedrpc.service.bundle.tokenizer import BundleTokenizer, InputTooLong, Truncation
from embedrpc.service.runtimes.batching import BatchPolicy, plan_batches
from fixtures.random_checkpoint import ENDOFTEXT_ID, tokenizer_variant

PROMPTS = ["", "Query: ", "Document: "]


@pytest.fixture(scope="module")
def tokenizers_pair(tiny_checkpoint):
    ours = BundleTokenizer.from_file(tiny_checkpoint / "tokenizer.json", max_input_tokens=128)
    return ours, AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_official_qwen3_ids(qwen3_tokenizer_json):
    """Known ids of the official Qwen3 vocabulary (the pinned tokenizer.json is the real one)."""
    tokenizer = BundleTokenizer.from_file(qwen3_tokenizer_json, max_input_tokens=32)
    assert tokenizer.encode(["Query: hello world"]) == [[2859, 25, 23811, 1879]]
    assert tokenizer.encode(["a<|endoftext|>b"]) == [[64, ENDOFTEXT_ID, 65]]
    assert not tokenizer.appends_eos


def test_eos_variant_appends_endoftext(qwen3_tokenizer_json):
    import json

    from tokenizers import Tokenizer

    spec = tokenizer_variant(json.loads(qwen3_tokenizer_json.read_text()), appends_eos=True)
    tokenizer = BundleTokenizer(Tokenizer.from_str(json.dumps(spec)), max_input_tokens=32)
    assert tokenizer.appends_eos and tokenizer.special.suffix == (ENDOFTEXT_ID,)
    assert tokenizer.encode(["hello world"]) == [[14990, 1879, ENDOFTEXT_ID]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_equal_hugging_face(tokenizers_pair, prompt):
    ours, hf = tokenizers_pair
    texts = probe_texts(100, ours.count_tokens)
    expected = hf([prompt + t for t in texts], truncation=True, max_length=128)["input_ids"]
    assert ours.encode(texts, prompt, Truncation.RIGHT) == expected


def test_right_truncation_matches_hf_and_keeps_eos(tokenizers_pair, appends_eos):
    ours, hf = tokenizers_pair
    text = "lorem ipsum dolor " * 100
    ids = ours.encode([text], "Query: ", Truncation.RIGHT, max_tokens=20)[0]
    assert ids == hf("Query: " + text, truncation=True, max_length=20)["input_ids"]
    assert len(ids) == 20
    assert (ids[-1] == ENDOFTEXT_ID) == appends_eos


def test_left_truncation_keeps_prompt_end_and_eos(tokenizers_pair, appends_eos):
    ours, _ = tokenizers_pair
    text = " ".join(f"w{i}" for i in range(30)) + " THE END"  # under 128 tokens in full
    full = ours.encode([text], "Query: ")[0]
    ids = ours.encode([text], "Query: ", Truncation.LEFT, max_tokens=24)[0]
    prompt_ids = ours.encode(["Query:"], max_tokens=100)[0][:2]  # "Query", ":"
    assert len(ids) == 24
    assert ids[:2] == prompt_ids
    tail = 24 - 2 - (1 if appends_eos else 0)
    body = full[:-1] if appends_eos else full
    assert ids[2:2 + tail] == body[-tail:]
    assert (ids[-1] == ENDOFTEXT_ID) == appends_eos


def test_too_long_without_truncation_names_the_input(tokenizers_pair):
    ours, _ = tokenizers_pair
    with pytest.raises(InputTooLong) as error:
        ours.encode(["short", "long " * 500], "Document: ")
    assert error.value.index == 1 and error.value.limit == 128
    assert "input 1" in str(error.value)


def test_plan_batches_respects_budget_and_covers_every_index():
    lengths = [5, 40, 3, 40, 17, 200, 9]
    batches = plan_batches(lengths, BatchPolicy(64))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 64
    assert [5] in batches  # 200 tokens is over budget: alone
