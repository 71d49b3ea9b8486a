"""GGUF artifacts for llama.cpp: F16/BF16 written with the `gguf` package, Q8_0/Q4_K_M by
llama.cpp's own quantiser from the F16 file.

The metadata is what makes a GGUF embed correctly without flags: architecture `qwen3`, pooling
LAST, and a tokenizer (gpt2 BPE, `qwen2` pre-tokenizer, control tokens, add_bos/add_eos read from
the checkpoint's post-processor) that gives the same ids as the Hugging Face tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embedrpc.export.errors import ExportError
from embedrpc.service.bundle.tokenizer import SpecialTokens

WRITTEN_TYPES = ("f16", "bf16")
QUANTISED_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def write_gguf(model, tokenizer_json: Path, out_path: Path, precision: str, *, name: str,
               eos_token_id: int | None, pad_token_id: int, context_length: int) -> list[Path]:
    """Write `model` (a Qwen3 backbone) as a GGUF of `precision` ("f16" or "bf16")."""
    import gguf

    if precision not in WRITTEN_TYPES:
        raise ExportError(f"GGUF {precision} is written by quantising, not directly")
    config = model.config
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    writer.add_name(name)
    writer.add_context_length(int(context_length))
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_causal_attention(True)
    writer.add_pooling_type(gguf.PoolingType.LAST)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if precision == "f16"
                         else gguf.LlamaFileType.MOSTLY_BF16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer_json, config.vocab_size, eos_token_id, pad_token_id)
    _add_tensors(writer, model, precision)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return [out_path]


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if theta is None:
        raise ExportError("the checkpoint's config has no rope_theta")
    scaling = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if scaling not in (None, "default"):
        raise ExportError(f"rope scaling {scaling!r} is not supported for GGUF export")
    return theta


def _add_tensors(writer, model, precision: str) -> None:
    import gguf
    import torch

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, model.config.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        target = names.get_name(f"model.{key}", try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"no GGUF name for tensor {key!r}")
        data = tensor.detach().to(torch.float32).numpy()
        if data.ndim == 1:  # norms stay float32, as llama.cpp expects
            writer.add_tensor(target, data)
        elif precision == "f16":
            writer.add_tensor(target, data.astype(np.float16))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16),
                              raw_dtype=gguf.GGMLQuantizationType.BF16)


def _add_tokenizer(writer, tokenizer_json: Path, vocab_size: int, eos_token_id: int | None,
                   pad_token_id: int) -> None:
    import gguf
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer_json.read_text())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ExportError(f"GGUF export supports BPE tokenizers, not {model.get('type')!r}")
    by_id = {index: token for token, index in model["vocab"].items()}
    added = {entry["id"]: entry for entry in spec.get("added_tokens", [])}
    if max([*by_id, *added]) >= vocab_size:
        raise ExportError("the tokenizer has ids beyond the model's embedding rows")
    tokens, types = [], []
    for index in range(vocab_size):
        if index in added:
            tokens.append(added[index]["content"])
            types.append(gguf.TokenType.CONTROL if added[index].get("special")
                         else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:  # embedding rows past the tokenizer's vocabulary
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]

    special = SpecialTokens.probe(Tokenizer.from_str(json.dumps(spec)))
    if len(special.prefix) > 1 or len(special.suffix) > 1:
        raise ExportError("llama.cpp can add at most one BOS and one EOS token; this tokenizer's "
                          "post-processor adds more")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_add_bos_token(bool(special.prefix))
    writer.add_add_eos_token(bool(special.suffix))
    if special.prefix:
        writer.add_bos_token_id(special.prefix[0])
    eos = special.suffix[0] if special.suffix else eos_token_id
    if eos is not None:
        writer.add_eos_token_id(eos)
    writer.add_pad_token_id(pad_token_id)


def quantize(f16_path: Path, out_path: Path, precision: str, threads: int = 0) -> list[Path]:
    """Quantise an F16 GGUF with llama.cpp's `llama_model_quantize`."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTISED_TYPES[precision])
    params.nthread = threads
    out_path.parent.mkdir(parents=True, exist_ok=True)
    status = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(out_path).encode(),
                                            ctypes.byref(params))
    if status != 0:
        raise ExportError(f"llama_model_quantize to {precision} failed with status {status}")
    return [out_path]
