"""The 0.6B-shape random checkpoint and its bundle, built once and cached (never committed)."""

from __future__ import annotations

import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"
FORMATS = "onnx-fp32,onnx-int8,gguf-f16,gguf-q8_0,openvino-int8,openvino-bf16"


def bundle(shape: str = "qwen3-0.6b") -> tuple[Path, Path]:
    """(checkpoint, bundle) at `shape`, exporting on first use (~8 minutes on 2 cores)."""
    from embedrpc.export.pipeline import export_bundle
    from fixtures.random_checkpoint import build_random_checkpoint

    checkpoint = CACHE / f"{shape}-checkpoint"
    out = CACHE / f"{shape}-bundle"
    if not (checkpoint / "config.json").is_file():
        print(f"[bench] building a random {shape} checkpoint", file=sys.stderr)
        build_random_checkpoint(checkpoint, shape, appends_eos=True, max_seq_length=32768)
    if not (out / "manifest.json").is_file():
        print(f"[bench] exporting {FORMATS} (cached in {out})", file=sys.stderr)
        export_bundle(str(checkpoint), out, formats=FORMATS, force=True)
    return checkpoint, out


def unpooled_onnx(checkpoint: Path) -> Path:
    """The backbone alone as ONNX fp32 (`last_hidden_state`, no pooling): the graph layout
    Jina's published ONNX has and peers such as embroider expect. Cached."""
    target = CACHE / "unpooled-onnx" / "model.onnx"
    if not target.is_file():
        import torch
        from transformers import AutoModel

        print("[bench] exporting an unpooled ONNX graph for peers", file=sys.stderr)
        model = AutoModel.from_pretrained(str(checkpoint), torch_dtype=torch.float32).eval()
        ids = torch.tensor([[9707, 11, 1879, 151643]])
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")

        class Backbone(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state

        target.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            program = torch.onnx.export(
                Backbone().eval(), (ids, torch.ones_like(ids)), dynamo=True,
                input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), optimize=True)
        program.save(str(target), external_data=True)
    return target
