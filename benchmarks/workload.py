"""The fixed, seeded workload: short queries and ~128- and ~512-token documents, mixed."""

from __future__ import annotations

import random
from dataclasses import dataclass

_TOPICS = ["vector search", "database indexing", "solar panels", "football tactics",
           "sourdough baking", "tax returns", "rail timetables", "protein folding",
           "kubernetes upgrades", "coral reefs", "museum opening hours", "password managers"]
_QUESTION_FORMS = ["how does {} work", "best practices for {}", "why is {} so expensive",
                   "{} explained for beginners", "latest news on {}", "compare options for {}",
                   "what are the risks of {}", "step by step guide to {}"]
_SENTENCES = [
    "The report on {} was published after months of careful review by independent experts.",
    "Most people underestimate how much {} depends on small, repeated decisions.",
    "Recent measurements show that {} behaves differently under heavy load than in tests.",
    "A practical introduction to {} starts with the vocabulary and the common mistakes.",
    "Critics argue that {} has been overhyped, while supporters point to steady gains.",
    "In this chapter we compare three approaches to {} and discuss their trade-offs.",
    "The committee recommended a phased rollout so that problems with {} surface early.",
    "Data collected over ten years suggests that {} improves when teams share results.",
]


SIZES = {"quick": dict(queries=16, docs128=6, docs512=2, latency=12),
         "full": dict(queries=64, docs128=24, docs512=8, latency=40)}


@dataclass(frozen=True)
class Text:
    kind: str  # "query", "doc128", "doc512"
    text: str

    def prompted(self, prompts: dict[str, str]) -> str:
        """The text behind its prompt: queries the query prompt, documents the document one."""
        return prompts["query" if self.kind == "query" else "document"] + self.text


def _document(rng: random.Random, target_tokens: int, count_tokens) -> str:
    topic = rng.choice(_TOPICS)
    sentences: list[str] = []
    while count_tokens(" ".join(sentences)) < target_tokens:
        sentences.append(rng.choice(_SENTENCES).format(topic))
    return " ".join(sentences)


def make_workload(count_tokens, queries: int, docs128: int, docs512: int,
                  seed: int = 1234) -> list[Text]:
    """Seeded texts, shuffled together; `count_tokens` sizes the documents."""
    rng = random.Random(seed)
    texts = [Text("query", rng.choice(_QUESTION_FORMS).format(rng.choice(_TOPICS)) + "?")
             for _ in range(queries)]
    texts += [Text("doc128", _document(rng, 128, count_tokens)) for _ in range(docs128)]
    texts += [Text("doc512", _document(rng, 512, count_tokens)) for _ in range(docs512)]
    rng.shuffle(texts)
    return texts


def sized_workload(count_tokens, size: str, seed: int = 1234) -> list[Text]:
    """The `quick` or `full` workload (SIZES) of the full benchmark."""
    counts = SIZES[size]
    return make_workload(count_tokens, counts["queries"], counts["docs128"], counts["docs512"],
                         seed)
