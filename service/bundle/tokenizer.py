"""Tokenisation with the bundle's own tokenizer: prompt, special tokens, truncation.

Every runtime is fed the ids produced here, so ONNX and llama.cpp see exactly the ids that
Hugging Face's tokenizer (and so sentence-transformers) produces for the same text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from embedrpc.service.errors import ErrorKind, RequestError


class Truncation(enum.Enum):
    NONE = "none"  # too long is an error
    RIGHT = "right"  # keep the start of the text
    LEFT = "left"  # keep the end of the text (the prompt is kept too)


# How many characters one token can stand for at most: its longest vocabulary entry, times 3
# for Unicode composition (NFC can fold up to three code points into one). A text longer than
# that many characters per allowed token cannot fit.
COMPOSITION_FACTOR = 3


@dataclass(frozen=True)
class TokenDetail:
    id: int
    text: str
    start: int | None  # span in the text's UTF-8 bytes; None for special tokens
    stop: int | None

    @property
    def special(self) -> bool:
        return self.start is None


class InputTooLong(RequestError):
    def __init__(self, index: int, tokens: int, limit: int, unit: str = "tokens"):
        super().__init__(ErrorKind.INVALID_ARGUMENT,
                         f"input {index} has {tokens} {unit}, over the limit of {limit} tokens; "
                         f"shorten it or ask for truncation", "inputs")
        self.index, self.tokens, self.limit = index, tokens, limit


@dataclass(frozen=True)
class SpecialTokens:
    """What the tokenizer's post-processor adds around a single sequence."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @classmethod
    def probe(cls, tokenizer: Tokenizer) -> "SpecialTokens":
        """Read the post-processor's effect by encoding one text with and without it."""
        text = "probe"
        plain = tokenizer.encode(text, add_special_tokens=False).ids
        full = tokenizer.encode(text, add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return cls(tuple(full[:start]), tuple(full[start + len(plain):]))
        raise ValueError("the tokenizer's post-processor rewrites the text's own tokens; "
                         "only prefix/suffix special tokens are supported")


class BundleTokenizer:
    """Thread-safe: holds no per-call state (truncation is applied here, not in the tokenizer)."""

    def __init__(self, tokenizer: Tokenizer, max_input_tokens: int):
        self._tokenizer = tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.special = SpecialTokens.probe(tokenizer)
        self.max_input_tokens = max_input_tokens
        # A vocabulary entry's length: its bytes for byte-level BPE (one symbol a byte), its
        # characters otherwise; either way no fewer than the characters it covers.
        self.chars_per_token = COMPOSITION_FACTOR * max(
            len(token) for token in tokenizer.get_vocab(with_added_tokens=True))

    def max_chars(self, tokens: int) -> int:
        """A text longer than this cannot fit in `tokens`: found without tokenising it."""
        return tokens * self.chars_per_token

    @classmethod
    def from_file(cls, path: Path, max_input_tokens: int) -> "BundleTokenizer":
        return cls(Tokenizer.from_file(str(path)), max_input_tokens)

    @property
    def appends_eos(self) -> bool:
        return bool(self.special.suffix)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with special tokens, before any truncation."""
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def tokens_of(self, ids: list[int]) -> list[str]:
        return [self._tokenizer.id_to_token(i) or "" for i in ids]

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def token_of(self, token_id: int) -> str | None:
        """The token of an id, None when the id is outside the vocabulary."""
        if not 0 <= token_id < self._tokenizer.get_vocab_size(with_added_tokens=True):
            return None
        return self._tokenizer.id_to_token(token_id)

    def describe(self, text: str, add_special: bool = True) -> list[TokenDetail]:
        """Each token of `text`, as text-embeddings-inference describes it: id, the text it
        covers (its own string for special tokens), whether it is special, and its span in
        the UTF-8 bytes of `text` (None for special tokens)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special)
        data, byte_at = text.encode("utf-8"), [0]
        for character in text:
            byte_at.append(byte_at[-1] + len(character.encode("utf-8")))
        return [TokenDetail(id_, token, None, None) if special else
                TokenDetail(id_, data[byte_at[start]:byte_at[stop]].decode("utf-8", "replace"),
                            byte_at[start], byte_at[stop])
                for id_, token, special, (start, stop) in zip(
                    encoding.ids, encoding.tokens, encoding.special_tokens_mask,
                    encoding.offsets, strict=True)]

    def decode(self, ids: list[int], skip_special: bool) -> str:
        size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        unknown = [i for i in ids if not 0 <= i < size]
        if unknown:
            raise RequestError(ErrorKind.INVALID_ARGUMENT,
                               f"token id {unknown[0]} is not in the vocabulary (0..{size - 1})",
                               "ids")
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special)

    def encode(self, texts: list[str], prompt: str = "", truncation: Truncation = Truncation.NONE,
               max_tokens: int | None = None) -> list[list[int]]:
        """Token ids of `prompt + text` for each text, with the post-processor's special tokens.

        Raises InputTooLong (naming the first offending index) when truncation is NONE.
        """
        limit = min(max_tokens or self.max_input_tokens, self.max_input_tokens)
        budget = limit - len(self.special.prefix) - len(self.special.suffix)
        prompt_tokens = len(self._tokenizer.encode(prompt, add_special_tokens=False).ids) \
            if prompt and truncation is Truncation.LEFT else 0
        texts = [self._bounded(index, text, limit, truncation) for index, text in enumerate(texts)]
        encodings = self._tokenizer.encode_batch([prompt + text for text in texts],
                                                 add_special_tokens=False)
        result = []
        for index, encoding in enumerate(encodings):
            ids = encoding.ids
            if len(ids) > budget:
                ids = self._truncate(index, ids, budget, limit, truncation, prompt, encoding,
                                     prompt_tokens)
            result.append([*self.special.prefix, *ids, *self.special.suffix])
        return result

    def _bounded(self, index: int, text: str, limit: int, truncation: "Truncation") -> str:
        """Megabytes are never tokenised: too long without truncation is refused at once; with
        truncation only the kept end is tokenised (far more characters than the limit needs)."""
        most = self.max_chars(limit)
        if len(text) <= most:
            return text
        if truncation is Truncation.NONE:
            raise InputTooLong(index, len(text), limit, "characters")
        return text[:most] if truncation is Truncation.RIGHT else text[-most:]

    def _truncate(self, index, ids, budget, limit, truncation, prompt, encoding, prompt_tokens):
        full_length = len(ids) + len(self.special.prefix) + len(self.special.suffix)
        if truncation is Truncation.NONE:
            raise InputTooLong(index, full_length, limit)
        if truncation is Truncation.RIGHT:
            return ids[:budget]
        kept_prefix = _tokens_within(encoding.offsets, len(prompt), prompt_tokens)
        if kept_prefix >= budget:
            raise InputTooLong(index, full_length, limit)
        return ids[:kept_prefix] + ids[len(ids) - (budget - kept_prefix):]


def _tokens_within(offsets: list[tuple[int, int]], prompt_chars: int, upper_bound: int) -> int:
    """How many leading tokens lie wholly inside the prompt's characters."""
    count = 0
    for _start, end in offsets[:upper_bound]:
        if end > prompt_chars:
            break
        count += 1
    return count
