"""The manifest of a bundle being exported: what the checkpoint says about itself, read once
(tokenizer facts, prompts, limits, Matryoshka sizes), and the tokenizer files copied beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from embedrpc.export.checkpoint import Checkpoint
from embedrpc.service.bundle import layout
from embedrpc.service.bundle.manifest import FileEntry, Manifest, Source, TokenizerInfo
from embedrpc.service.bundle.tokenizer import BundleTokenizer

TOKENIZER_FILES = (layout.TOKENIZER, "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")
ST_FILES = ("config_sentence_transformers.json", "sentence_bert_config.json")
JINA_PROMPTS = {"query": "Query: ", "document": "Document: "}  # when the checkpoint names none


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def base_manifest(checkpoint: Checkpoint, task: str | None, config, root: Path) -> Manifest:
    source = checkpoint.path
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, root / name)
    if layout.TOKENIZER not in copied:
        _save_fast_tokenizer(source, root)
        copied.insert(0, layout.TOKENIZER)
    st_config = read_json(source / "config_sentence_transformers.json")
    max_tokens = _max_input_tokens(source, config)
    tokenizer_config = read_json(source / "tokenizer_config.json")
    tokenizer = BundleTokenizer.from_file(root / layout.TOKENIZER, max_tokens)
    hidden = int(config.hidden_size)
    dims = getattr(config, "matryoshka_dimensions", None) or \
        [d for d in (32, 64, 128, 256, 512, 768, 1024) if d < hidden] + [hidden]
    return Manifest(
        source=Source(checkpoint.model, checkpoint.revision, checkpoint.content_sha256(), task),
        architecture=config.model_type, hidden_size=hidden,
        matryoshka_dims=sorted(int(d) for d in dims if int(d) <= hidden),
        max_input_tokens=max_tokens,
        prompts=st_config.get("prompts") or dict(JINA_PROMPTS),
        default_prompt_name=st_config.get("default_prompt_name") or "document",
        tokenizer=TokenizerInfo(
            files=[FileEntry.of(root, name) for name in copied],
            appends_eos=tokenizer.appends_eos,
            eos_token_id=(tokenizer.special.suffix[-1] if tokenizer.appends_eos
                          else _token_id(tokenizer, tokenizer_config.get("eos_token"))),
            pad_token_id=_pad_id(tokenizer, tokenizer_config, config),
            padding_side=tokenizer_config.get("padding_side", "right")))


def _save_fast_tokenizer(source: Path, root: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source, use_fast=True).backend_tokenizer.save(
        str(root / layout.TOKENIZER))


def _token_id(tokenizer: BundleTokenizer, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return tokenizer.token_id(token) if token else None


def _pad_id(tokenizer: BundleTokenizer, tokenizer_config: dict, config) -> int:
    for candidate in (_token_id(tokenizer, tokenizer_config.get("pad_token")),
                      getattr(config, "pad_token_id", None),
                      _token_id(tokenizer, tokenizer_config.get("eos_token")),
                      getattr(config, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0  # any id works: padded positions are masked out


def _max_input_tokens(source: Path, config) -> int:
    configured = read_json(source / "sentence_bert_config.json").get("max_seq_length")
    if configured:
        return int(configured)
    limit = int(config.max_position_embeddings)
    model_max = read_json(source / "tokenizer_config.json").get("model_max_length")
    return min(limit, int(model_max)) if isinstance(model_max, int) and model_max > 0 else limit
