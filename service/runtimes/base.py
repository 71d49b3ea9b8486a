"""The interface every inference runtime implements."""

from __future__ import annotations

import abc

import numpy as np

from embedrpc.service.batching import plan_batches


class RuntimeFailure(Exception):
    """An inference runtime failed to load or to run."""


class Runtime(abc.ABC):
    """Turns token-id sequences into L2-normalised last-token embeddings."""

    name: str  # "onnx-cpu", "onnx-cuda", "llamacpp"
    precision: str  # the artifact's precision
    artifact: str  # the manifest artifact name in use
    pads_batches: bool = True  # False: sequences are packed, a batch costs its total tokens
    max_sequences: int | None = None  # most sequences one forward pass takes
    # Padded runtimes: the most padded tokens per real token worth batching for (None: any).
    max_padding_ratio: float | None = None

    @abc.abstractmethod
    def embed_batch(self, sequences: list[list[int]]) -> np.ndarray:
        """One forward pass over `sequences`: float32 [len(sequences), hidden], unit rows."""

    def embed(self, sequences: list[list[int]], max_batch_tokens: int) -> np.ndarray:
        """Embed any number of sequences, batched by padded-token budget, in input order."""
        if not sequences:
            raise ValueError("no sequences to embed")
        batches = plan_batches([len(s) for s in sequences], max_batch_tokens,
                               padded=self.pads_batches, max_sequences=self.max_sequences)
        out: np.ndarray | None = None
        for batch in batches:
            vectors = self.embed_batch([sequences[i] for i in batch])
            if out is None:
                out = np.empty((len(sequences), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out

    def close(self) -> None:
        """Release the runtime's resources."""
