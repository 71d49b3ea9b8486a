"""ONNX artifacts: fp32 from torch, fp16 and int8 derived from it.

The graph takes `input_ids` and `attention_mask` (int64, [batch, seq], either padding side) and
returns `embeddings` [batch, hidden]: the last real token's hidden state, L2-normalised.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from embedrpc.service.bundle import formats

GRAPH_NAME = Path(formats.ONNX.main_file).name  # model.onnx (+ model.onnx.data)
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "embeddings"
OPSET = 18
_TWO_GB = 2 * 1024**3


def last_token_embedder(model):
    """Wrap a Qwen3 backbone so that pooling and normalisation happen in the graph."""
    import torch

    class LastTokenEmbedder(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state
            positions = torch.arange(1, attention_mask.shape[1] + 1, device=input_ids.device)
            last = (attention_mask * positions).argmax(dim=-1)  # last 1 in the mask
            pooled = hidden[torch.arange(hidden.shape[0], device=input_ids.device), last]
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    return LastTokenEmbedder(model).eval()


def export_fp32(model, out_dir: Path) -> list[Path]:
    """Export with torch.onnx (dynamo); weights go to external data. Returns the files written."""
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # optional-torchvision chatter
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / GRAPH_NAME
    sample_ids = torch.tensor([[9707, 11, 1879, 0, 151643], [9707, 1879, 30, 151643, 151643]])
    sample_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            last_token_embedder(model), (sample_ids, sample_mask), dynamo=True,
            input_names=INPUT_NAMES, output_names=[OUTPUT_NAME], opset_version=OPSET,
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), optimize=True,
            verbose=False)
    program.save(str(target), external_data=True)
    return sorted(p for p in out_dir.iterdir() if p.name.startswith(GRAPH_NAME))


def convert_fp16(fp32_path: Path, out_dir: Path) -> list[Path]:
    """fp16 weights and compute, float32/int64 at the graph's edges (keep_io_types: a LoRA
    branch's adapter inputs too, cast to fp16 inside)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_path))
    kept = [init for init in model.graph.initializer if ".lora_" in init.name]
    for init in kept:  # the LoRA inputs' defaults must keep their inputs' type
        model.graph.initializer.remove(init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The exporter annotates every value's type; re-inferring would serialise the whole
        # proto, which fails past 2 GB.
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    converted.graph.initializer.extend(kept)
    return _save(converted, out_dir / GRAPH_NAME)


def rewrite(source: Path, target: Path, edit) -> list[Path]:
    """The graph at `source` changed by `edit(model)` and saved at `target` (which may be
    `source`), weights in external data."""
    import onnx

    model = onnx.load(str(source))
    edit(model)
    for stale in target.parent.glob(target.name + "*"):
        stale.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=target.name + ".data")
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(target.name))


def quantize_int8(fp32_path: Path, out_dir: Path, keep_float: list[str] = ()) -> list[Path]:
    """Dynamic int8 (QInt8 weights, per output channel) of the MatMuls and of the embedding
    table's Gather; activations stay float. Weights go to external data, which onnxruntime maps
    instead of copying. At the 0.6B shape (benchmarks/results/int8-variants-*.md): 574 MiB
    instead of 1,019, a serving process's peak RSS 716 MiB instead of 1,705, min cosine to the
    oracle 0.99807 instead of 0.99831 (bar 0.995), the same speed. `keep_float`: nodes left in
    float (a LoRA branch: its weights are inputs, set per task)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / GRAPH_NAME
    quantize_dynamic(str(fp32_path), str(target), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul", "Gather"],
                     use_external_data_format=True, nodes_to_exclude=list(keep_float))
    files = sorted(p for p in out_dir.iterdir() if p.name.startswith(GRAPH_NAME))
    for path in files:  # the quantiser writes its data file owner-only (0600)
        readable_as_umask_allows(path)
    return files


def readable_as_umask_allows(path: Path) -> None:
    """Give `path` the permissions a newly created file gets (0666 less the umask), so a
    bundle exported by one user can be served by another (a container's non-root user)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _save(model, target: Path) -> list[Path]:
    import onnx

    external = model.ByteSize() > _TWO_GB
    onnx.save_model(model, str(target), save_as_external_data=external,
                    all_tensors_to_one_file=True, location=target.name + ".data")
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(target.name))
