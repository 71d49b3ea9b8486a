"""python -m benchmarks.int8_variants: which onnxruntime int8 graph to ship.

From the bundle's ONNX fp32 graph (0.6B shape) this writes dynamic-int8 variants: the MatMuls
only (weights inside the .onnx, as embedrpc wrote it before), the same with weights in external
data (which onnxruntime maps instead of copying), and MatMuls plus the embedding table's Gather.
For each: bytes on disk, a serving process's peak RSS (open + embed the parity probes, in a
child process), parity against the stored sentence-transformers oracle (the int8 bar is 0.995)
and the probe rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import assets, report
from benchmarks.engines import vm_hwm_kb
from embedrpc.service.bundle import formats
from embedrpc.service.runtimes import hostinfo
from embedrpc.service.runtimes.isolation import run_isolated

VARIANTS = {"MatMul, weights in the .onnx (before)": (["MatMul"], False),
            "MatMul, external data": (["MatMul"], True),
            "MatMul + Gather, external data": (["MatMul", "Gather"], True)}


def write_variant(fp32: Path, out_dir: Path, op_types: list[str], external: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = out_dir / "model.onnx"
    if not target.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=op_types, use_external_data_format=external)
    return target


def measure(payload: dict) -> dict:
    """Child side: open the graph, embed the probes, report RSS, parity and rate."""
    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.bundle.parity import compare, oracle_vectors, probe_token_ids
    from embedrpc.service.runtimes.onnx_runtime import OnnxRuntime

    bundle = Bundle(Path(payload["bundle"]))
    sequences = probe_token_ids(bundle)
    runtime = OnnxRuntime(payload["model"], artifact="onnx-int8", precision="int8",
                          pad_token_id=bundle.manifest.tokenizer.pad_token_id)
    runtime.embed([min(sequences, key=len)])
    started = time.perf_counter()
    vectors = runtime.embed(sequences)
    elapsed = time.perf_counter() - started
    min_cos, _, _ = compare(vectors, oracle_vectors(bundle))
    return {"rss_mib": vm_hwm_kb(os.getpid()) / 1024, "min_cosine": min_cos,
            "tokens_per_s": sum(map(len, sequences)) / elapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    _, bundle_dir = assets.bundle()
    fp32 = bundle_dir / formats.ONNX_FP32.path
    rows = []
    for index, (label, (op_types, external)) in enumerate(VARIANTS.items()):
        print(f"[bench] {label}", file=sys.stderr)
        model = write_variant(fp32, assets.CACHE / "int8-variants" / str(index), op_types,
                              external)
        size = sum(p.stat().st_size for p in model.parent.iterdir()) / 2**20
        result = run_isolated("benchmarks.int8_variants:measure",
                              {"bundle": str(bundle_dir), "model": str(model)}, timeout=1800)
        rows.append((label, size, result))
    cpu = hostinfo.cpu()
    lines = ["| int8 graph | MiB on disk | peak RSS MiB | RSS / size | min cos vs oracle | "
             "probe tokens/s |", "|---|--:|--:|--:|--:|--:|"]
    for label, size, r in rows:
        lines.append(f"| {label} | {size:.0f} | {r['rss_mib']:.0f} | {r['rss_mib'] / size:.2f} "
                     f"| {r['min_cosine']:.5f} | {r['tokens_per_s']:.0f} |")
    text = "\n".join([
        f"# onnxruntime int8 graphs on {report.machine()['cpu']} ({datetime.date.today()})", "",
        *lines, "",
        "0.6B shape (random weights, real tokenizer); dynamic int8 (QInt8 weights per channel); "
        "each measured in its own process: load, embed the bundle's parity probes "
        f"(one text per pass, as onnx-cpu runs int8). This host: {cpu.label}.", ""])
    path = report.write_focused(args.out, "int8-variants", text)
    path.with_suffix(".json").write_text(
        json.dumps([{"variant": label, "mib": size, **r} for label, size, r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
