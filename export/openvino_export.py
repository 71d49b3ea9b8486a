"""OpenVINO IR artifacts, converted from the bundle's ONNX fp32 graph (pooling and
normalisation in-graph, the same inputs and output).

- bf16: the graph as IR with its weights stored in fp16 (half the bytes); the runtime computes
  in bf16 where the CPU does so natively.
- int8: NNCF post-training quantisation with static activation scales (SmoothQuant first),
  calibrated on the bundle's own calibration corpus (export/calibration.py: sentences and
  documents made of them, both prompts), never a hub dataset; weights int8, the embedding table
  too (NNCF quantises its Gather).
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedrpc.export.calibration import calibration_documents, calibration_texts
from embedrpc.export.errors import ExportError
from embedrpc.service.bundle import formats
from embedrpc.service.bundle.tokenizer import Truncation
from embedrpc.service.runtimes.interface import pad

CALIBRATION_MAX_TOKENS = 512  # calibration documents are cut here
# SmoothQuant's migration strength for MatMuls. At the 0.6B shape, min cosine to the oracle
# over the probes: NNCF's default 0.991 on sentences only, 0.9955 with the documents, 0.9983
# with the documents and 0.5 (onnxruntime's dynamic int8: 0.9983).
SMOOTH_QUANT_ALPHA = 0.5


def _openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ExportError("OpenVINO formats need openvino (pip install 'embedrpc[export]')") \
            from exc
    return openvino


def write_bf16(onnx_model: Path, out_dir: Path) -> list[Path]:
    openvino = _openvino()
    model = openvino.convert_model(str(onnx_model))
    return _save(openvino, model, out_dir, formats.OPENVINO_BF16)


def write_int8(onnx_model: Path, out_dir: Path, calibration: list[dict],
               keep_float: list[str] = ()) -> list[Path]:
    """`keep_float`: the ONNX graph's nodes (a LoRA branch) NNCF must leave in float: their
    weights are inputs set per task, and quantising them would quantise the adapter."""
    openvino = _openvino()
    try:
        import nncf
    except ImportError as exc:
        raise ExportError(f"{formats.OPENVINO_INT8} needs nncf (pip install 'embedrpc[export]')") \
            from exc
    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = openvino.convert_model(str(onnx_model))
    smoothing = nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    quantized = nncf.quantize(model, nncf.Dataset(calibration),
                              model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(names=list(keep_float),
                                                              validate=False),
                              advanced_parameters=nncf.AdvancedQuantizationParameters(
                                  smooth_quant_alphas=smoothing))
    return _save(openvino, quantized, out_dir, formats.OPENVINO_INT8)


def calibration_inputs(tokenizer, prompts: dict[str, str], pad_token_id: int,
                       padding_side: str, adapters: list[dict] = ()) -> list[dict]:
    """The calibration corpus's sentences and documents under every prompt, one text per item
    (documents cut to the model's limit or CALIBRATION_MAX_TOKENS), as the graph's inputs;
    with task adapters (each a dict of the graph's LoRA inputs), the tasks take turns, so the
    backbone's activation ranges are those of served traffic."""
    items = []
    texts = calibration_texts() + calibration_documents()
    for name in sorted(prompts):
        for ids in tokenizer.encode(texts, prompts[name], Truncation.RIGHT,
                                    max_tokens=CALIBRATION_MAX_TOKENS):
            input_ids, mask = pad([ids], pad_token_id, padding_side)
            items.append({"input_ids": input_ids, "attention_mask": mask,
                          **(adapters[len(items) % len(adapters)] if adapters else {})})
    return items


def _save(openvino, model, out_dir: Path, spec: formats.ArtifactFormat) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / Path(spec.path).name
    openvino.save_model(model, str(xml), compress_to_fp16=True)
    files = [xml, xml.with_suffix(".bin")]
    if not all(path.is_file() for path in files):
        raise ExportError(f"OpenVINO did not write {xml} and its weights")
    return files
