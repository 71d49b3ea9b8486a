"""ONNX Runtime backend: the exported graph pools the last token and L2-normalises in-graph.

The int8 artifact quantises activations dynamically with one scale per tensor, so in a padded
batch every text's scale depends on its batch-mates (and on the padding). To keep a text's
vector independent of the batch it lands in, int8 runs one sequence per pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedrpc.service.runtimes.base import Runtime, RuntimeFailure


def pad(sequences: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence: (input_ids, attention_mask), both int64."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        span = slice(0, len(sequence)) if side == "right" else slice(longest - len(sequence), longest)
        ids[row, span] = sequence
        mask[row, span] = 1
    return ids, mask


class OnnxRuntime(Runtime):
    def __init__(self, model_path: Path, *, artifact: str, precision: str, pad_token_id: int,
                 providers: list[str] | None = None, threads: int = 0,
                 padding_side: str = "right"):
        import onnxruntime as ort

        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeFailure(f"cannot load {model_path}: {exc}") from exc
        self.name = "onnx-cuda" if "CUDAExecutionProvider" in self._session.get_providers() \
            else "onnx-cpu"
        self.artifact, self.precision = artifact, precision
        self.pad_token_id, self.padding_side = pad_token_id, padding_side
        self.max_sequences = 1 if precision == "int8" else None
        # A CPU computes every padded token: batching texts of different lengths only wastes
        # time (0.6B fp32 served at 0.44x raw before this bound). A GPU gains from wide batches.
        self.max_padding_ratio = None if self.name == "onnx-cuda" else 1.25
        self._ort = ort

    def embed_batch(self, sequences: list[list[int]]) -> np.ndarray:
        ids, mask = pad(sequences, self.pad_token_id, self.padding_side)
        if self.name == "onnx-cuda":
            vectors = self._run_on_cuda(ids, mask)
        else:
            (vectors,) = self._session.run(["embeddings"],
                                           {"input_ids": ids, "attention_mask": mask})
        vectors = np.asarray(vectors, dtype=np.float32)
        # The graph normalises already; again in float32, for the fp16 graph's rounding.
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def _run_on_cuda(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """IO binding: inputs copied to the GPU once, the pooled output read straight back."""
        binding = self._session.io_binding()
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            binding.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output("embeddings", "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
