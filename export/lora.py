"""Task adapters applied at run time: the base repo's LoRA adapters read strictly, and written
in the forms each runtime loads, beside a backbone whose projections take them.

An adapter is `W x + s * B (A x)` on the seven projections of every layer (s = alpha / r).
- ONNX (and the OpenVINO IR converted from it): after each projection's MatMul a branch
  `MatMul(MatMul(x, A), B)` is added whose A [in, rank] and B [rank, out] are graph inputs
  `layers.<i>.<module>.<proj>.lora_A|lora_B`, defaulting to rank 0 (no adapter: the backbone
  exactly); the adapter file (onnxruntime's .onnx_adapter) holds A^T and (s B)^T under those
  names. The int8 graph quantises the backbone and leaves the branch in float.
- GGUF: llama.cpp's LoRA adapter format (general.type adapter, adapter.type lora,
  adapter.lora.alpha, `blk.<i>.<tensor>.weight.lora_a|lora_b` as peft stores them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrpc.export.adapters import CONFIG_NAME, WEIGHTS_NAME, check_config
from embedrpc.export.errors import ExportError

PROJECTIONS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
               "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
GGUF_TENSORS = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
                "down_proj": "ffn_down"}
_KEY = re.compile(r"^base_model\.model\.(?:model\.)?layers\.(\d+)\.(self_attn|mlp)\."
                  r"(\w+_proj)\.lora_([AB])\.weight$")
RANK_DIM = "lora_rank"


@dataclass
class TaskAdapter:
    """One task's adapter: (layer, projection) -> (A [r, in], B [out, r]) as peft stores
    them, and its scale alpha / r."""

    task: str
    pairs: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    alpha: float
    rank: int

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def input_name(layer: int, projection: str, half: str) -> str:
    """The graph input of one half ("A" or "B") of one projection's branch."""
    return f"layers.{layer}.{PROJECTIONS[projection]}.{projection}.lora_{half}"


def read_adapter(adapter_dir: Path, task: str, layers: int) -> TaskAdapter:
    """The task's adapter, or one line naming why it cannot be applied at run time: every
    stored tensor must belong to a target projection, and every target projection of every
    layer must have both halves."""
    from safetensors.numpy import load_file

    config = check_config(adapter_dir, task)
    try:
        stored = load_file(adapter_dir / WEIGHTS_NAME)
    except Exception as exc:  # safetensors raises several types
        raise ExportError(f"adapter {task}: cannot read {adapter_dir / WEIGHTS_NAME}: "
                          f"{exc}") from exc
    halves: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    stray = []
    for key, tensor in stored.items():
        match = _KEY.match(key)
        if not match or match.group(3) not in config["target_modules"] \
                or PROJECTIONS.get(match.group(3)) != match.group(2) \
                or int(match.group(1)) >= layers:
            stray.append(key)
            continue
        halves.setdefault((int(match.group(1)), match.group(3)), {})[match.group(4)] = \
            tensor.astype(np.float32)
    expected = {(layer, proj) for layer in range(layers) for proj in config["target_modules"]}
    incomplete = sorted(f"layers.{layer}.{proj}" for layer, proj in expected
                        if set(halves.get((layer, proj), {})) != {"A", "B"})
    if stray or incomplete:
        problems = [f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                    for label, keys in (("stored tensors land on no projection", stray),
                                        ("projections lack a half", incomplete)) if keys]
        raise ExportError(f"adapter {task} does not fit the backbone: {'; '.join(problems)}")
    rank = int(config["r"])
    pairs = {target: (found["A"], found["B"]) for target, found in halves.items()}
    if any(a.shape[0] != rank or b.shape[1] != rank for a, b in pairs.values()):
        raise ExportError(f"adapter {task}: tensors disagree with its rank {rank}")
    return TaskAdapter(task, pairs, float(config["lora_alpha"]), rank)


def adapter_dirs(checkpoint_path: Path, tasks: list[str]) -> dict[str, Path]:
    return {task: checkpoint_path / "adapters" / task for task in tasks
            if (checkpoint_path / "adapters" / task / CONFIG_NAME).is_file()}


_SCOPE = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)$")


def add_branches(model) -> list[str]:
    """Insert a LoRA branch after every projection MatMul of an exported backbone (an
    onnx.ModelProto, changed in place): x -> MatMul(x, W) + MatMul(MatMul(x, A), B), A and B
    graph inputs with rank-0 defaults. Returns the names of the MatMul nodes added (the float
    branch that int8 quantisation must leave alone)."""
    from onnx import TensorProto, helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes, added, inputs, defaults = [], [], [], []
    for node in graph.node:
        nodes.append(node)
        scopes = next((p.value for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), "")
        found = _SCOPE.search(_last_module(scopes)) if node.op_type == "MatMul" else None
        if found is None or node.input[1] not in weights:
            continue
        layer, projection = int(found.group(1)), found.group(3)
        fan_in, fan_out = weights[node.input[1]].dims
        a, b = input_name(layer, projection, "A"), input_name(layer, projection, "B")
        base = f"{node.output[0]}.backbone"
        output, node.output[0] = node.output[0], base
        nodes += [helper.make_node("MatMul", [node.input[0], a], [f"{a}.out"],
                                   name=f"{a}.matmul"),
                  helper.make_node("MatMul", [f"{a}.out", b], [f"{b}.out"], name=f"{b}.matmul"),
                  helper.make_node("Add", [base, f"{b}.out"], [output], name=f"{b}.add")]
        added += [f"{a}.matmul", f"{b}.matmul"]
        inputs += [helper.make_tensor_value_info(a, TensorProto.FLOAT, [fan_in, RANK_DIM]),
                   helper.make_tensor_value_info(b, TensorProto.FLOAT, [RANK_DIM, fan_out])]
        defaults += [helper.make_tensor(a, TensorProto.FLOAT, [fan_in, 0], []),
                     helper.make_tensor(b, TensorProto.FLOAT, [0, fan_out], [])]
    if not added:
        raise ExportError("the exported graph has no projection MatMuls to attach adapters to")
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.initializer.extend(defaults)
    return added


def _last_module(scopes: str) -> str:
    """The innermost module of a node's name scopes (a Python list's repr, or a string)."""
    names = re.findall(r"'([^']*)'", scopes)
    modules = [name for name in names if "." in name]
    return modules[-1] if modules else ""


def strip_defaults(model) -> None:
    """The same graph with the LoRA inputs required (no rank-0 default initializers): what
    OpenVINO's ONNX reader takes (it reads a [n, 0] initializer as a scalar)."""
    names = {i.name for i in model.graph.input if ".lora_" in i.name}
    kept = [init for init in model.graph.initializer if init.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def onnx_parameters(adapter: TaskAdapter) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs for one task: A^T [in, r] and (s B)^T [r, out], float32."""
    out = {}
    for (layer, projection), (a, b) in sorted(adapter.pairs.items()):
        out[input_name(layer, projection, "A")] = np.ascontiguousarray(a.T, np.float32)
        out[input_name(layer, projection, "B")] = np.ascontiguousarray(
            (b * adapter.scale).T, np.float32)
    return out


def write_onnx_adapter(adapter: TaskAdapter, path: Path) -> Path:
    """onnxruntime's adapter file (a flatbuffer the server maps, not copies)."""
    import onnxruntime as ort

    arrays = onnx_parameters(adapter)  # kept alive until written (the writer holds views)
    values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in arrays.items()}
    adapter_format = ort.AdapterFormat()
    adapter_format.set_adapter_version(1)
    adapter_format.set_model_version(1)
    adapter_format.set_parameters(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    adapter_format.export_adapter(str(path))
    del values, arrays
    return path


def write_gguf_adapter(adapter: TaskAdapter, path: Path, architecture: str) -> Path:
    """llama.cpp's LoRA adapter file; llama.cpp applies alpha / r itself (scale 1.0)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
    for (layer, projection), (a, b) in sorted(adapter.pairs.items()):
        tensor = f"blk.{layer}.{GGUF_TENSORS[projection]}.weight"
        writer.add_tensor(f"{tensor}.lora_a", a.astype(np.float16))
        writer.add_tensor(f"{tensor}.lora_b", b.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return path
