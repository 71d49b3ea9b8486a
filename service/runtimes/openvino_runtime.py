"""OpenVINO backend (`openvino-cpu`): the bundle's IR, converted at export from the ONNX fp32
graph, so pooling and normalisation are in-graph here too.

Two artifacts: `openvino-int8`, quantised by NNCF with static activation scales calibrated on
the bundle's own calibration corpus, and `openvino-bf16`, the graph run with OpenVINO's bf16
inference precision where the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere it
runs in fp32 and reports so. Static scales make a text's vector independent of its batch-mates
(up to rounding), so unlike onnxruntime's dynamic int8 this int8 may batch; a CPU computes every
padded token, so batches hold padding within 1.25x the real tokens, as for onnx-cpu.

Padding always goes on the right, whatever side the bundle's tokenizer pads: the graph pools the
last real token either way (onnxruntime fp32 gives identical vectors for both sides), but
OpenVINO's fused attention moves a left-padded text's vector with its batch-mates (by up to
3e-3 per component for int8 on the tiny test model) and a right-padded one not at all.
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

PADDING_SIDE = "right"
# The precision each artifact computes in; int8 keeps its unquantised operations in fp32 on
# every CPU (OpenVINO would otherwise pick bf16 on AMX hosts), so int8 means the same everywhere.
INFERENCE_PRECISION = {"int8": "f32", "bf16": "bf16"}


def usable_directory(path: str) -> bool:
    """Whether `path` names a directory this process can create and write (a read-only cache
    only costs compiling at every start)."""
    if not path:
        return False
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def native_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(core, precision: str) -> str:
    """What an artifact of `precision` computes in on this CPU (bf16 only where native)."""
    inference = INFERENCE_PRECISION[precision]
    return "f32" if inference == "bf16" and not native_bf16(core) else inference


def compile_config(inference: str, options: RuntimeOptions) -> dict:
    """The CPU plugin's settings: one stream with every thread on one request at a time (the
    scheduler runs one batch at a time; benchmarks/results/openvino-settings-*.md measures the
    alternatives)."""
    config = {"INFERENCE_PRECISION_HINT": inference, "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_MMAP": True}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = options.threads
    if usable_directory(options.compiled_cache):  # a restart loads, not compiles
        config["CACHE_DIR"] = options.compiled_cache
    return config


class OpenVinoRuntime(Runtime):
    def __init__(self, model_path, *, artifact: str, precision: str, pad_token_id: int,
                 options: RuntimeOptions = DEFAULT_OPTIONS,
                 adapters: dict[str, Path] | None = None):
        """`adapters`: run-time task adapters by task (the ONNX graph's adapter files: the IR
        has the same LoRA inputs), the default first."""
        try:
            import openvino
        except ImportError as exc:
            raise RuntimeFailure("the OpenVINO runtime needs openvino "
                                 "(pip install 'embedrpc[openvino]')") from exc
        if precision not in INFERENCE_PRECISION:
            raise RuntimeFailure(f"{SPEC.name} runs {' or '.join(INFERENCE_PRECISION)} "
                                 f"artifacts, not {precision}")
        core = openvino.Core()
        inference = inference_precision(core, precision)
        try:
            compiled = core.compile_model(str(model_path), "CPU",
                                          compile_config(inference, options))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise RuntimeFailure(f"cannot load {model_path}: {exc}") from exc
        self._request = compiled.create_infer_request()
        self._output = compiled.output("embeddings")
        self.name, self.artifact = SPEC.name, artifact
        self.precision = f"{precision} (run in fp32: no native bf16 on this CPU)" \
            if precision == "bf16" and inference == "f32" else precision
        self.pad_token_id = pad_token_id
        self.policy = BatchPolicy(options.max_batch_tokens,
                                  max_padding_ratio=CPU_MAX_PADDING_RATIO)
        self.tasks = tuple(adapters or ())
        self._adapters = {task: _adapter_tensors(openvino, path)
                          for task, path in (adapters or {}).items()}
        self._bound: str | None = None

    def embed_batch(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        ids, mask = pad(sequences, self.pad_token_id, PADDING_SIDE)
        task = task_of(self, task)
        if task != self._bound:  # a switch: the task's tensors, shared, not copied
            for name, tensor in self._adapters[task].items():
                self._request.set_tensor(name, tensor)
            self._bound = task
        result = self._request.infer({"input_ids": ids, "attention_mask": mask})
        vectors = np.asarray(result[self._output], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _adapter_tensors(openvino, path: Path) -> dict:
    """A task's LoRA tensors as OpenVINO tensors over arrays read once from its adapter file."""
    import onnxruntime

    try:
        values = onnxruntime.AdapterFormat.read_adapter(str(path)).get_parameters()
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RuntimeFailure(f"cannot load the adapter {path}: {exc}") from exc
    # Copied out of the reader's buffers (freed with it), once: the tensors share the copies.
    return {name: openvino.Tensor(np.array(value.numpy(), dtype=np.float32, copy=True),
                                  shared_memory=True)
            for name, value in values.items()}


def _open(bundle, artifact, options: RuntimeOptions) -> OpenVinoRuntime:
    return OpenVinoRuntime(bundle.path_of(artifact), artifact=artifact.name,
                           precision=artifact.precision,
                           pad_token_id=bundle.manifest.tokenizer.pad_token_id, options=options,
                           adapters=adapter_files(bundle, formats.OPENVINO))


def _available() -> tuple[bool, str]:
    if importlib.util.find_spec("openvino") is None:
        return False, "openvino is not installed"
    return True, "openvino is installed"


SPEC = RuntimeSpec("openvino-cpu", Tier.CPU, "OpenVINO",
                   (formats.OPENVINO_INT8, formats.OPENVINO_BF16), ("openvino",), _available,
                   _open, runs_by_default=(formats.OPENVINO,))
