"""ONNX Runtime backend: the exported graph pools the last token and L2-normalises in-graph.

Two kinds: `onnx-cpu` and `onnx-cuda` (onnxruntime-gpu's CUDA provider, IO binding).

The int8 artifact quantises activations dynamically with one scale per tensor, so in a padded
batch every text's scale depends on its batch-mates (and on the padding). To keep a text's
vector independent of the batch it lands in, int8 runs one sequence per pass. A CPU computes
every padded token, so CPU batches hold padding within 1.25x the real tokens (0.6B fp32 was
served at 0.44x raw before this bound); a GPU gains from wide batches.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from embedrpc.service.bundle import formats
from embedrpc.service.runtimes.batching import BatchPolicy
from embedrpc.service.runtimes.interface import (
    CPU_MAX_PADDING_RATIO,
    DEFAULT_OPTIONS,
    Runtime,
    RuntimeFailure,
    RuntimeOptions,
    RuntimeSpec,
    Tier,
    adapter_files,
    pad,
    task_of,
)

CPU_PROVIDERS = ["CPUExecutionProvider"]
CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxRuntime(Runtime):
    def __init__(self, model_path, *, artifact: str, precision: str, pad_token_id: int,
                 options: RuntimeOptions = DEFAULT_OPTIONS, cuda: bool = False,
                 adapters: dict[str, Path] | None = None):
        """`adapters`: run-time task adapters (onnxruntime's adapter files, mapped, not copied)
        by task, the default first; the graph then takes them as inputs (export/lora.py)."""
        import onnxruntime as ort

        if options.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not "
                             f"{options.padding_side!r}")
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # An adapter-taking graph's rank-0 defaults are overridable initializers, which
        # onnxruntime warns about once each (hundreds of lines at the 0.6B shape).
        session_options.log_severity_level = 3
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        try:
            self._session = ort.InferenceSession(str(model_path), session_options,
                                                 providers=CUDA_PROVIDERS if cuda
                                                 else CPU_PROVIDERS)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeFailure(f"cannot load {model_path}: {exc}") from exc
        on_cuda = "CUDAExecutionProvider" in self._session.get_providers()
        if cuda and not on_cuda:
            raise RuntimeFailure(f"onnxruntime did not place {model_path} on CUDA")
        self.name = (CUDA if on_cuda else CPU).name
        self.artifact, self.precision = artifact, precision
        self.pad_token_id, self.padding_side = pad_token_id, options.padding_side
        self.policy = BatchPolicy(options.max_batch_tokens,
                                  max_sequences=1 if precision == formats.ONNX_INT8.precision
                                  else None,
                                  max_padding_ratio=None if on_cuda else CPU_MAX_PADDING_RATIO)
        self._ort = ort
        self.tasks = tuple(adapters or ())
        # RunOptions hold their adapter by a raw pointer: the adapters must live as long.
        self._adapters = {task: self._loaded(path) for task, path in (adapters or {}).items()}
        self._run_options = {task: self._activating(adapter)
                             for task, adapter in self._adapters.items()}

    def _loaded(self, path: Path):
        adapter = self._ort.LoraAdapter()
        try:
            adapter.Load(str(path))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeFailure(f"cannot load the adapter {path}: {exc}") from exc
        return adapter

    def _activating(self, adapter):
        """RunOptions that apply one task's adapter to every run given them."""
        run_options = self._ort.RunOptions()
        run_options.add_active_adapter(adapter)
        return run_options

    def embed_batch(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        ids, mask = pad(sequences, self.pad_token_id, self.padding_side)
        run_options = self._run_options.get(task_of(self, task))
        if self.name == CUDA.name and run_options is None:
            vectors = self._run_on_cuda(ids, mask)
        else:  # with an adapter: onnxruntime feeds its tensors (IO binding would skip them)
            (vectors,) = self._session.run(["embeddings"],
                                           {"input_ids": ids, "attention_mask": mask},
                                           run_options)
        vectors = np.asarray(vectors, dtype=np.float32)
        # The graph normalises already; again in float32, for the fp16 graph's rounding.
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def _run_on_cuda(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """IO binding: inputs copied to the GPU once, the pooled output read straight back."""
        binding = self._session.io_binding()
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            binding.bind_ortvalue_input(
                name, self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output("embeddings", "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def _open(bundle, artifact, options: RuntimeOptions, *, cuda: bool) -> OnnxRuntime:
    return OnnxRuntime(bundle.path_of(artifact), artifact=artifact.name,
                       precision=artifact.precision,
                       pad_token_id=bundle.manifest.tokenizer.pad_token_id, options=options,
                       cuda=cuda, adapters=adapter_files(bundle, formats.ONNX))


def _cpu_available() -> tuple[bool, str]:
    # Found, not imported: a native library that crashes on import here (onnxruntime under
    # qemu-user reading an x86 /proc/cpuinfo) must fail its self-check child, not the server.
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed"
    return True, "onnxruntime is installed"


def cuda_available() -> tuple[bool, str]:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return False, "onnxruntime is not installed"
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    if not any(capi.glob("libonnxruntime_providers_cuda*")):
        return False, "onnxruntime has no CUDA execution provider (install the gpu extra)"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False, "CUDA_VISIBLE_DEVICES hides every GPU"
    if not any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)):
        return False, "no NVIDIA device is visible"
    return True, "a CUDA device is visible and onnxruntime has its CUDA provider"


CPU = RuntimeSpec(
    "onnx-cpu", Tier.CPU, "onnxruntime",
    (formats.ONNX_INT8, formats.ONNX_FP32, formats.ONNX_FP16), ("onnxruntime",), _cpu_available,
    lambda bundle, artifact, options: _open(bundle, artifact, options, cuda=False),
    runs_by_default=(formats.ONNX,))
CUDA = RuntimeSpec(
    "onnx-cuda", Tier.GPU, "onnxruntime", (formats.ONNX_FP16, formats.ONNX_FP32),
    ("onnxruntime-gpu",), cuda_available,
    lambda bundle, artifact, options: _open(bundle, artifact, options, cuda=True),
    device="CUDA")
