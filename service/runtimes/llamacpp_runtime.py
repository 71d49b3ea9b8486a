"""llama.cpp backend (GGUF) through llama-cpp-python's low-level API.

It takes token ids from the bundle tokenizer (so ids equal every other runtime's), packs several
sequences into one decode pass without padding, and reads the pooled (LAST) vector of each.

Passes are short (`PASS_TOKENS`): packed sequences share one unified KV cache and are masked
apart, so every token of a pass attends over the whole pass, and in embedding mode llama.cpp
computes and keeps the LM head's logits for every token (it refuses to output fewer), 0.6 MB
per token at Qwen3's vocabulary. The context is sized for one pass; an input longer than a
pass runs alone in a context of its own, a pass at a time (the KV cache carries the earlier
passes), up to the runtime's input limit. A sequence over that limit is an error here, never a
silent truncation.

Packing is invariant up to rounding only: llama.cpp picks matmul kernels (and how it quantises
activations) by the batch's shape, so a text's vector can move by ~1e-4 (F16) to ~2e-3 (Q8_0)
per component with its batch-mates. `batch_invariant=True` decodes one sequence per pass, which
makes a vector a function of its text alone, at a cost.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
from pathlib import Path

import numpy as np

from embedrpc.service.bundle import formats
from embedrpc.service.runtimes.batching import BatchPolicy
from embedrpc.service.runtimes.interface import (
    DEFAULT_OPTIONS,
    Runtime,
    RuntimeFailure,
    RuntimeOptions,
    RuntimeSpec,
    Setting,
    Tier,
    adapter_files,
    task_of,
)

KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type ids
KV_TYPE = Setting("kv_type", "f32", "llama.cpp KV cache type", choices=tuple(KV_TYPES))
BATCH_INVARIANT = Setting("batch_invariant", False,
                          "llama.cpp: decode one text per pass, so a vector never depends on its "
                          "batch-mates (slower; ONNX runtimes always are)")
LLAMA_MAX_SEQ = 256  # llama.cpp's compile-time limit on sequences per context
PASS_TOKENS = 256  # tokens per decode pass (benchmarks/results/llamacpp-passes-*.md)
CONTEXT_GRANULE = 256  # llama.cpp pads contexts to this
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


def quiet_logs(llama_cpp) -> None:
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
                 options: RuntimeOptions = DEFAULT_OPTIONS, max_sequences: int = 64,
                 adapters: dict[str, Path] | None = None):
        """`adapters`: run-time task adapters (llama.cpp LoRA GGUFs) by task, the default
        first; each context runs with the task's adapter set (a switch re-reserves llama.cpp's
        compute graph, ~4 ms at 28 layers; the weights stay)."""
        try:
            import llama_cpp
        except ImportError as exc:
            raise RuntimeFailure("the llama.cpp runtime needs llama-cpp-python "
                                 "(pip install 'embedrpc[llamacpp]')") from exc
        kv_type = options.setting(KV_TYPE)
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}")
        self._llama = llama_cpp
        quiet_logs(llama_cpp)
        _load_dynamic_backends_once(llama_cpp)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.use_extra_bufts = uses_extra_buffers()
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise RuntimeFailure(f"llama.cpp cannot load {model_path}")
        self.tasks = tuple(adapters or ())
        self._adapters = {}  # freed with the model
        for task, path in (adapters or {}).items():
            adapter = llama_cpp.llama_adapter_lora_init(self._model, str(path).encode())
            if not adapter:
                llama_cpp.llama_model_free(self._model)
                self._model = None
                raise RuntimeFailure(f"llama.cpp cannot load the adapter {path}")
            self._adapters[task] = adapter
        self._ctx_task: str | None = None  # the adapter set on the pass context
        self._kv_type = KV_TYPES[kv_type]
        self._threads = options.threads or os.cpu_count() or 1
        # Every pass is at most `pass_tokens` long, so attention spans one pass, not the whole
        # budget; an input longer than a pass runs alone, in passes, in a context of its own.
        self.pass_tokens = min(options.max_batch_tokens, PASS_TOKENS)
        self.max_tokens = options.context_tokens
        max_sequences = min(max_sequences, self.pass_tokens, LLAMA_MAX_SEQ)
        self.context_sequences = max_sequences
        self._ctx = None
        try:
            self._pass_context()
        except RuntimeFailure:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._batch = llama_cpp.llama_batch_init(self.pass_tokens, 0, 1)
        self.hidden_size = llama_cpp.llama_model_n_embd(self._model)
        self.name, self.artifact, self.precision = SPEC.name, artifact, precision
        self.policy = BatchPolicy(self.pass_tokens, packed=True,
                                  max_sequences=1 if options.setting(BATCH_INVARIANT)
                                  else max_sequences)

    def _new_context(self, tokens: int, sequences: int):
        """A context for `tokens` tokens of up to `sequences` sequences, decoded in passes of
        at most `pass_tokens` (llama.cpp computes, and keeps, the LM head's logits for every
        token of a pass in embedding mode: 0.6 MB per token at Qwen3's vocabulary)."""
        llama_cpp = self._llama
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = _round_up(tokens, CONTEXT_GRANULE)
        params.n_batch = params.n_ubatch = self.pass_tokens
        params.n_seq_max = sequences
        params.kv_unified = True  # sequences of one pass share the cells
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_LAST
        params.type_k = params.type_v = self._kv_type
        params.n_threads = params.n_threads_batch = self._threads
        return llama_cpp.llama_init_from_model(self._model, params)

    def embed_batch(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        task = task_of(self, task)
        # llama.cpp aborts the whole process past its context: refuse here instead.
        longest = max(len(s) for s in sequences)
        if longest > self.max_tokens:
            raise ValueError(f"a sequence of {longest} tokens is over this runtime's limit of "
                             f"{self.max_tokens} tokens; it is not truncated here")
        total = sum(len(s) for s in sequences)
        if len(sequences) == 1 and total > self.pass_tokens:
            return self._embed_long(sequences[0], task)
        if total > self.pass_tokens or len(sequences) > self.context_sequences:
            raise ValueError(f"batch of {len(sequences)} sequences / {total} tokens exceeds "
                             f"a pass's {self.context_sequences} sequences / "
                             f"{self.pass_tokens} tokens")
        ctx = self._pass_context()
        if task != self._ctx_task:
            self._set_adapter(ctx, task)
            self._ctx_task = task
        self._clear(ctx)
        self._decode(ctx, [(seq_id, 0, s) for seq_id, s in enumerate(sequences)])
        return _unit_rows([self._pooled(ctx, seq_id) for seq_id in range(len(sequences))])

    def _pass_context(self):
        if self._ctx is None:
            self._ctx = self._new_context(self.pass_tokens, self.context_sequences)
            if not self._ctx:
                self._ctx = None
                raise RuntimeFailure(f"llama.cpp cannot create a context of "
                                     f"{self.pass_tokens} tokens")
        return self._ctx

    def _release_pass_context(self) -> None:
        if self._ctx is not None:
            self._llama.llama_free(self._ctx)
            self._ctx, self._ctx_task = None, None

    def _set_adapter(self, ctx, task: str | None) -> None:
        """Run `ctx` with `task`'s adapter at scale 1 (the file's alpha / r applies)."""
        if task is None:
            return
        llama_cpp = self._llama
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[task])
        scales = (ctypes.c_float * 1)(1.0)
        if llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
            raise RuntimeFailure(f"llama.cpp could not apply the {task} adapter")

    def _embed_long(self, sequence: list[int], task: str | None) -> np.ndarray:
        """One input longer than a pass: a context of its own, filled a pass at a time (the
        KV cache carries the earlier passes). Only one context exists at a time (the pass
        context is made again for the next batch), so peak memory is the larger one's."""
        self._release_pass_context()
        ctx = self._new_context(len(sequence), 1)
        if not ctx:
            raise RuntimeFailure(f"llama.cpp cannot create a context of {len(sequence)} tokens")
        try:
            self._set_adapter(ctx, task)
            for start in range(0, len(sequence), self.pass_tokens):
                self._decode(ctx, [(0, start, sequence[start:start + self.pass_tokens])])
            return _unit_rows([self._pooled(ctx, 0)])
        finally:
            self._llama.llama_free(ctx)

    def _clear(self, ctx) -> None:
        self._llama.llama_memory_clear(self._llama.llama_get_memory(ctx), True)

    def _decode(self, ctx, pieces: list[tuple[int, int, list[int]]]) -> None:
        """Decode `(sequence id, first position, tokens)` pieces as one pass."""
        batch, row = self._batch, 0
        for seq_id, start, tokens in pieces:
            for offset, token in enumerate(tokens):
                batch.token[row] = token
                batch.pos[row] = start + offset
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq_id
                batch.logits[row] = True  # embedding contexts must output every token
                row += 1
        batch.n_tokens = row
        status = self._llama.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeFailure(f"llama_decode failed with status {status}")

    def _pooled(self, ctx, seq_id: int) -> np.ndarray:
        pointer = self._llama.llama_get_embeddings_seq(ctx, seq_id)
        if not pointer:
            raise RuntimeFailure(f"llama.cpp returned no pooled embedding for sequence {seq_id}")
        return np.ctypeslib.as_array(pointer, shape=(self.hidden_size,)).copy()

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
        if getattr(self, "_model", None):
            self._llama.llama_batch_free(self._batch)
            self._release_pass_context()
            self._llama.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        self.close()


def _round_up(value: int, granule: int) -> int:
    return -(-value // granule) * granule


def _unit_rows(rows: list[np.ndarray]) -> np.ndarray:
    vectors = np.stack(rows).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _open(bundle, artifact, options: RuntimeOptions) -> LlamaCppRuntime:
    return LlamaCppRuntime(bundle.path_of(artifact), artifact=artifact.name,
                           precision=artifact.precision, options=options,
                           adapters=adapter_files(bundle, formats.GGUF))


def _available() -> tuple[bool, str]:
    if importlib.util.find_spec("llama_cpp") is None:
        return False, "llama-cpp-python is not installed"
    return True, "llama-cpp-python is installed"


SPEC = RuntimeSpec("llamacpp", Tier.CPU, "llama.cpp",
                   (formats.GGUF_Q8_0, formats.GGUF_F16, formats.GGUF_BF16, formats.GGUF_Q4_K_M),
                   ("llama_cpp_python",), _available, _open, runs_by_default=(formats.GGUF,),
                   settings=(KV_TYPE, BATCH_INVARIANT))
