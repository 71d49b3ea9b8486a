"""llama.cpp backend (GGUF) through llama-cpp-python's low-level API.

It takes token ids from the bundle tokenizer (so ids equal every other runtime's), packs several
sequences into one decode without padding, and reads the pooled (LAST) vector of each sequence.
A sequence or batch that does not fit the context is an error here, never a silent truncation.

Packing is invariant up to rounding only: llama.cpp picks matmul kernels (and how it quantises
activations) by the batch's shape, so a text's vector can move by ~1e-4 (F16) to ~2e-3 (Q8_0)
per component with its batch-mates. `batch_invariant=True` decodes one sequence per pass, which
makes a vector a function of its text alone, at a cost (0.6B Q8_0, 2 cores, 32 short queries:
82 instead of 138 tokens/s).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
from pathlib import Path

import numpy as np

from embedrpc.service.batching import BatchPolicy
from embedrpc.service.runtimes.base import (
    DEFAULT_OPTIONS,
    Runtime,
    RuntimeFailure,
    RuntimeKind,
    RuntimeOptions,
)

KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type ids
LLAMA_MAX_SEQ = 256  # llama.cpp's compile-time limit on sequences per context
_GGML_LOG_LEVEL_ERROR = 4
_log_callback = None  # kept referenced: llama.cpp calls it from C
_backends_loaded = False


def uses_extra_buffers() -> bool:
    """Whether weights may go to ggml's extra CPU buffer types (AMX tiles, repacked layouts).

    Not on x86-64. ggml's AMX matmul segfaults on Xeons with AMX (upstream llama.cpp#20824;
    seen in `llama_decode` on Q8_0 at every shape), and on the Intel Xeon measured without AMX
    the repacked layouts gained nothing for Q8_0 and cost Q4_K_M 16% (benchmarks/results/
    llamacpp-buffers-*.md), so every x86 host runs the one tested path: plain CPU buffers.
    Other architectures keep ggml's default, where its repacked Arm kernels are the point.
    """
    return platform.machine().lower() not in ("x86_64", "amd64")


def _load_dynamic_backends(llama_cpp) -> None:
    """Builds with GGML_BACKEND_DL ship one CPU backend per instruction-set level (the portable
    container image does); ggml picks the best for this CPU once they are loaded. The wheel
    puts them beside its libraries or, as llama-cpp-python 0.3 does, in site-packages/bin."""
    package = Path(llama_cpp.__file__).parent
    for directory in (package / "lib", package.parent / "bin"):
        if any(directory.glob("libggml-cpu-*.so")):
            # The very libggml that libllama linked (a second copy would keep its own registry).
            ggml = ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD)
            ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            ggml.ggml_backend_load_all_from_path(str(directory).encode())
            return


def _load_dynamic_backends_once(llama_cpp) -> None:
    global _backends_loaded
    if not _backends_loaded:
        _load_dynamic_backends(llama_cpp)
        _backends_loaded = True


def _quiet_logs(llama_cpp) -> None:
    """Only llama.cpp's errors reach stderr (its info logs are per-load and per-context)."""
    global _log_callback
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def forward_errors(level, text, _user_data):
        if level == _GGML_LOG_LEVEL_ERROR:
            sys.stderr.write(text.decode("utf-8", "replace"))

    _log_callback = forward_errors
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class LlamaCppRuntime(Runtime):
    def __init__(self, model_path: Path, *, artifact: str, precision: str,
                 options: RuntimeOptions = DEFAULT_OPTIONS, max_sequences: int = 64):
        try:
            import llama_cpp
        except ImportError as exc:
            raise RuntimeFailure("the llama.cpp runtime needs llama-cpp-python "
                                 "(pip install 'embedrpc[llamacpp]')") from exc
        if options.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}")
        # One context holds a full batch, or the longest input alone; llama.cpp reserves an
        # output per sequence within it (it aborts the process otherwise).
        context = options.context_tokens
        max_sequences = min(max_sequences, context, LLAMA_MAX_SEQ)
        self._llama = llama_cpp
        _quiet_logs(llama_cpp)
        _load_dynamic_backends_once(llama_cpp)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.use_extra_bufts = uses_extra_buffers()
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise RuntimeFailure(f"llama.cpp cannot load {model_path}")
        threads = options.threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = context
        params.n_seq_max = max_sequences
        params.kv_unified = True  # every sequence may use the whole context
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_LAST
        params.type_k = params.type_v = KV_TYPES[options.kv_type]
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeFailure(f"llama.cpp cannot create a context for {model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._batch = llama_cpp.llama_batch_init(context, 0, 1)
        self.hidden_size = llama_cpp.llama_model_n_embd(self._model)
        self.name, self.artifact, self.precision = "llamacpp", artifact, precision
        self.context_tokens, self.context_sequences = context, max_sequences
        self.policy = BatchPolicy(options.max_batch_tokens, packed=True,
                                  max_sequences=1 if options.batch_invariant else max_sequences)

    def embed_batch(self, sequences: list[list[int]]) -> np.ndarray:
        # llama.cpp aborts the whole process past its context: refuse here instead.
        longest = max(len(s) for s in sequences)
        if longest > self.context_tokens:
            raise ValueError(f"a sequence of {longest} tokens is over this runtime's context of "
                             f"{self.context_tokens} tokens; it is not truncated here")
        total = sum(len(s) for s in sequences)
        if total > self.context_tokens or len(sequences) > self.context_sequences:
            raise ValueError(f"batch of {len(sequences)} sequences / {total} tokens exceeds "
                             f"the context's {self.context_sequences} sequences / "
                             f"{self.context_tokens} tokens")
        llama_cpp, batch = self._llama, self._batch
        row = 0
        for seq_id, sequence in enumerate(sequences):
            for position, token in enumerate(sequence):
                batch.token[row] = token
                batch.pos[row] = position
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq_id
                batch.logits[row] = True
                row += 1
        batch.n_tokens = row
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeFailure(f"llama_decode failed with status {status}")
        vectors = np.empty((len(sequences), self.hidden_size), dtype=np.float32)
        for seq_id in range(len(sequences)):
            pointer = llama_cpp.llama_get_embeddings_seq(self._ctx, seq_id)
            if not pointer:
                raise RuntimeFailure(f"llama.cpp returned no pooled embedding for sequence "
                                     f"{seq_id}")
            vectors[seq_id] = np.ctypeslib.as_array(pointer, shape=(self.hidden_size,))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """llama.cpp's own tokenisation of `text` (special tokens in the text are parsed)."""
        encoded = text.encode("utf-8")
        capacity = len(encoded) + 8
        tokens = (self._llama.llama_token * capacity)()
        count = self._llama.llama_tokenize(self._vocab, encoded, len(encoded), tokens, capacity,
                                           add_special, True)
        if count < 0:
            raise RuntimeFailure(f"llama_tokenize needs {-count} tokens")
        return list(tokens[:count])

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._llama.llama_batch_free(self._batch)
            self._llama.llama_free(self._ctx)
            self._llama.llama_model_free(self._model)
            self._ctx = None

    def __del__(self):
        self.close()


def _open(bundle, artifact, options: RuntimeOptions) -> LlamaCppRuntime:
    return LlamaCppRuntime(bundle.path_of(artifact), artifact=artifact.name,
                           precision=artifact.precision, options=options)


def _available() -> tuple[bool, str]:
    if importlib.util.find_spec("llama_cpp") is None:
        return False, "llama-cpp-python is not installed"
    return True, "llama-cpp-python is installed"


KIND = RuntimeKind("llamacpp", ("gguf-q8_0", "gguf-f16", "gguf-bf16", "gguf-q4_k_m"),
                   _available, _open)
