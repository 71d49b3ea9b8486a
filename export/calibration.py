"""The fixed calibration corpus whose embeddings set the int8/uint8 ranges stored in a bundle."""

from __future__ import annotations

import random

CORPUS_NAME = "embedrpc-calibration-v1"
_SUBJECTS = ["The database", "A search engine", "Our support team", "The new laptop", "This recipe",
             "The city council", "A small startup", "The research paper", "Your invoice",
             "The football club", "Das Unternehmen", "La biblioteca", "研究团队", "東京の会社"]
_VERBS = ["announced", "explains", "improves", "reduces", "compares", "describes", "fixes",
          "publishes", "measures", "supports"]
_OBJECTS = ["query latency by caching embeddings", "a faster way to bake sourdough bread",
            "the quarterly revenue and operating costs", "how transformers encode long documents",
            "new rules for public transport fares", "battery life under heavy workloads",
            "the results of a clinical trial", "a refund policy for late deliveries",
            "the winning goal in the final minute", "vector search over millions of passages",
            "den neuen Tarif für Geschäftskunden", "los horarios de apertura en verano",
            "新的检索模型", "新しい検索機能"]
_QUESTIONS = ["how do I {}?", "what is the best way to {}", "why does {} matter", "{} near me",
              "compare {}", "{} explained"]


def calibration_texts(count: int = 160, seed: int = 20260101) -> list[str]:
    """Deterministic, varied sentences and queries (several languages, lengths and topics)."""
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        obj = rng.choice(_OBJECTS)
        if index % 3 == 0:
            texts.append(rng.choice(_QUESTIONS).format(obj))
        else:
            sentences = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
                         for _ in range(1 + index % 4)]
            texts.append(" ".join(sentences))
    return texts


def calibration_documents(count: int = 32, sentences: int = 12) -> list[str]:
    """Longer texts made of the corpus (consecutive runs of `sentences` texts), so static
    activation ranges also cover late positions: calibrated on sentences alone, OpenVINO int8
    missed its bar on 512-token probes at the 0.6B shape (min cosine 0.991)."""
    texts = calibration_texts()
    return [" ".join(texts[start:start + sentences])
            for start in range(0, len(texts) - sentences + 1, 5)][:count]
