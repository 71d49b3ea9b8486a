"""onnx-cuda on a CUDA host: parity of the fp16/fp32 artifacts on the GPU, and throughput.

Run through benchmarks/gpu_check.sh, which installs onnxruntime-gpu first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import engines
from benchmarks.workload import make_workload
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.registry import open_runtime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from embedrpc.export.pipeline import export_bundle
    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.bundle.parity import compare, probe_token_ids
    from embedrpc.service.runtimes.measure import measure
    from fixtures.random_checkpoint import build_random_checkpoint

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("onnxruntime has no CUDA provider: is onnxruntime-gpu installed?", file=sys.stderr)
        return 2
    cache = Path(__file__).parent / "cache"
    checkpoint, bundle_dir = cache / "qwen3-0.6b-checkpoint", cache / "gpu-bundle"
    if not (checkpoint / "config.json").is_file():
        build_random_checkpoint(checkpoint, "qwen3-0.6b", True, max_seq_length=32768)
    if not (bundle_dir / "manifest.json").is_file():
        export_bundle(str(checkpoint), bundle_dir, formats="onnx-fp32,onnx-fp16", force=True)
    bundle = Bundle(bundle_dir)
    report = {"providers": ort.get_available_providers(), "parity": {}, "throughput": {}}

    sequences = probe_token_ids(bundle)
    cpu = open_runtime(bundle, "onnx-fp32").embed(sequences)
    for artifact in ("onnx-fp16", "onnx-fp32"):
        spec = bundle.manifest.artifact(artifact)
        (versus_oracle,) = measure(bundle, artifact, spec.parity.bar, kind="onnx-cuda")
        runtime = open_runtime(bundle, artifact, kind="onnx-cuda")
        assert runtime.name == "onnx-cuda", f"{artifact} did not land on CUDA"
        versus_cpu = compare(runtime.embed(sequences), cpu)
        report["parity"][artifact] = {
            "min_cosine_vs_oracle": versus_oracle.parity and versus_oracle.parity.min_cosine,
            "failure": versus_oracle.failure, "bar": spec.parity.bar,
            "passed": versus_oracle.passed, "min_cosine_vs_cpu_fp32": versus_cpu[0],
            "max_abs_diff_vs_cpu_fp32": versus_cpu[2]}

    tokenizer = bundle.tokenizer(args.max_batch_tokens)
    texts = make_workload(tokenizer.count_tokens, 512, 256, 64)
    prompts = bundle.manifest.prompts
    ids = [tokenizer.encode([t.prompted(prompts)])[0] for t in texts]
    tokens = sum(map(len, ids))
    queries = [t.text for t in make_workload(tokenizer.count_tokens, 50, 0, 0, 7)]
    runtime = open_runtime(bundle, "onnx-fp16", options_for(bundle,
        max_batch_tokens=args.max_batch_tokens), kind="onnx-cuda")
    runtime.embed(ids[:64])
    started = time.perf_counter()
    runtime.embed(ids)
    raw_seconds = time.perf_counter() - started
    report["throughput"]["raw"] = {"tokens": tokens, "tokens_per_s": tokens / raw_seconds}
    served = engines.served(bundle_dir, "onnx-cuda", "onnx-fp16", texts, queries, tokens, 0,
                            args.max_batch_tokens, args.clients)
    report["throughput"]["served"] = {"tokens_per_s": served.tokens_per_s,
                                      "latency_ms": served.latency_ms,
                                      "peak_rss_mb": served.peak_rss_mb,
                                      "cold_start_s": served.cold_start_s}
    report["throughput"]["served_vs_raw"] = served.tokens_per_s / (tokens / raw_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    ok = all(p["passed"] for p in report["parity"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
