"""The parity oracle: sentence-transformers' Transformer -> Pooling(lasttoken) -> Normalize.

Every artifact is judged against vectors this module computes with the checkpoint's own
tokenizer and prompts, so "parity" means "what a sentence-transformers user would get".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_BASE_TEXTS = [
    "what is the capital of france?",
    "Paris is the capital and most populous city of France.",
    "x",
    "数据库索引如何提高查询速度？日本語のテキストも含めます。",
    "Great job 🎉🚀 — emojis 👍🏽 and accents: café, naïve, Ångström.",
    "tabs\tand\nnewlines\r\n\tmixed   spaces  ",
    "a literal <|endoftext|> inside the text, and <|im_start|> too",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "Kurze deutsche Anfrage über Vektorsuche",
]
_LONG_PARAGRAPH = (
    "Dense retrieval systems map queries and documents into a shared vector space, where "
    "relevance is measured by cosine similarity. Long documents are split into passages, each "
    "embedded on its own, and the nearest passages are returned for re-ranking. "
)


@dataclass(frozen=True)
class Probe:
    text: str
    prompt_name: str


def probe_texts(max_tokens: int, count_tokens) -> list[str]:
    """Fixed probe texts: short, long, CJK, emoji, whitespace, special-token text, 1 token,
    one just under `max_tokens` and one over it (which exercises truncation keeping EOS)."""
    words = (_LONG_PARAGRAPH * (max_tokens // 8 + 2)).split()
    low, high = 1, len(words)  # the most words whose text fits with room for a prompt
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(" ".join(words[:middle])) <= max_tokens - 8:
            low = middle
        else:
            high = middle - 1
    return [*_BASE_TEXTS, _LONG_PARAGRAPH * 2, " ".join(words[:low]), " ".join(words)]


def make_probes(prompts: dict[str, str], max_tokens: int, count_tokens) -> list[Probe]:
    return [Probe(text, name) for name in sorted(prompts)
            for text in probe_texts(max_tokens, count_tokens)]


def probes_to_json(probes: list[Probe]) -> list[dict]:
    return [asdict(p) for p in probes]


def build_oracle(checkpoint_dir: Path, max_seq_length: int, padding_side: str = "right"):
    """A SentenceTransformer assembled module by module (last-token pooling, normalised)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(
        str(checkpoint_dir), max_seq_length=max_seq_length, unpad_inputs=False,
        model_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
        processor_kwargs={"padding_side": padding_side})
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")


def oracle_embeddings(oracle, probes: list[Probe], prompts: dict[str, str],
                      batch_size: int = 8) -> np.ndarray:
    """Oracle vectors for `probes`, in probe order (float32, unit rows)."""
    out = np.empty((len(probes), oracle.get_embedding_dimension()), dtype=np.float32)
    for name in sorted({p.prompt_name for p in probes}):
        rows = [i for i, p in enumerate(probes) if p.prompt_name == name]
        out[rows] = oracle.encode([probes[i].text for i in rows], prompt=prompts[name],
                                  batch_size=batch_size, convert_to_numpy=True,
                                  show_progress_bar=False)
    return out
