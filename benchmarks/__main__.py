"""python -m benchmarks [--quick]: embedrpc's CPU runtimes, raw and served, against peers and
this host's limit, at the real Qwen3-0.6B shape (random weights, real tokenizer)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks import assets, engines, limit, report
from benchmarks.workload import SIZES, make_workload, sized_workload
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.registry import open_runtime

ENGINES = [("onnx-cpu", "onnx-int8"), ("onnx-cpu", "onnx-fp32"),
           ("openvino-cpu", "openvino-int8"), ("openvino-cpu", "openvino-bf16"),
           ("llamacpp", "gguf-q8_0"), ("llamacpp", "gguf-f16")]
# Served over the HTTP front too (OpenAI's route, base64 and float) beside gRPC.
HTTP_ENGINES = [("openvino-cpu", "openvino-int8"), ("onnx-cpu", "onnx-int8")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload (minutes)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=16, help="concurrent gRPC clients")
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", help="results file name (default: quick or full + date)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-http", action="store_true", help="no HTTP front rows")
    parser.add_argument("--engines", help="only these artifacts, comma-separated (e.g. "
                                          "openvino-int8,onnx-int8)")
    parser.add_argument("--infinity", help="path of an `infinity_emb` executable (own venv)")
    parser.add_argument("--embroider", help="python of an environment with `embroider`")
    parser.add_argument("--st-backends", help="python of an environment with "
                        "`sentence-transformers[openvino,onnx]`")
    args = parser.parse_args(argv)
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]

    checkpoint, bundle_dir = assets.bundle()
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    prompts = bundle.manifest.prompts
    tokenizer = bundle.tokenizer(args.max_batch_tokens)
    texts = sized_workload(tokenizer.count_tokens, size_name, args.seed)
    prompted = [t.prompted(prompts) for t in texts]
    sequences = [tokenizer.encode([p])[0] for p in prompted]
    tokens = sum(map(len, sequences))
    queries = [t.text for t in make_workload(tokenizer.count_tokens, size["latency"], 0, 0,
                                             args.seed + 1)]
    query_ids = tokenizer.encode(queries, prompts["query"])
    workload = (f"{size['queries']} queries, {size['docs128']} ~128-token and "
                f"{size['docs512']} ~512-token documents, shuffled")
    print(f"[bench] {workload}: {tokens} tokens", file=sys.stderr)

    config = json.loads((checkpoint / "config.json").read_text())
    limits = limit.ceilings(config, tokens / len(sequences), args.threads)

    print("[bench] onnx-fp32 reference vectors", file=sys.stderr)
    reference = open_runtime(bundle, "onnx-fp32", options_for(bundle,
        threads=args.threads, max_input_tokens=max(map(len, sequences)))).embed(sequences)
    results, unavailable = [], []
    chosen = args.engines.split(",") if args.engines else [a for _, a in ENGINES]
    for runtime, artifact in [(r, a) for r, a in ENGINES if a in chosen]:
        print(f"[bench] {artifact}: raw", file=sys.stderr)
        results.append(engines.raw(bundle, artifact, sequences, query_ids, args.threads,
                                   args.max_batch_tokens, reference))
        print(f"[bench] {artifact}: served", file=sys.stderr)
        results.append(engines.served(bundle_dir, runtime, artifact, texts, queries, tokens,
                                      args.threads, args.max_batch_tokens, args.clients))
        if (runtime, artifact) in HTTP_ENGINES and not args.skip_http:
            for protocol in (engines.HTTP_BASE64, engines.HTTP_FLOAT):
                print(f"[bench] {artifact}: served over {protocol}", file=sys.stderr)
                results.append(engines.served(bundle_dir, runtime, artifact, texts, queries,
                                              tokens, args.threads, args.max_batch_tokens,
                                              args.clients, protocol))
    print("[bench] what --runtime auto picks here", file=sys.stderr)
    auto = engines.auto_pick(bundle_dir, args.threads, args.max_batch_tokens)
    if not args.skip_peers:
        for dtype in ("fp32", "bf16"):
            print(f"[bench] peer: sentence-transformers {dtype}", file=sys.stderr)
            results.append(engines.sentence_transformers(checkpoint, prompted, queries, tokens,
                                                         args.threads, dtype, reference))
        print("[bench] peer: llama-cpp-python embed()", file=sys.stderr)
        gguf = bundle.path_of(bundle.manifest.artifact("gguf-q8_0"))
        try:
            results.append(engines.isolated(engines.llama_cpp_embed_defaults, gguf, prompted,
                                            queries, tokens, reference))
        except RuntimeError as exc:
            why = (" (embedrpc's llama.cpp runtime loads without ggml's extra weight buffers "
                   "on x86-64 for this reason: llama.cpp#20824)"
                   if str(exc).startswith("crashed") else "")
            unavailable.append(f"llama-cpp-python Llama.embed() with its defaults: {exc} on "
                               f"this host{why}")
        infinity = shutil.which("infinity_emb") or (
            args.infinity if args.infinity and Path(args.infinity).exists() else None)
        if infinity:
            print("[bench] peer: Infinity", file=sys.stderr)
            results.append(engines.infinity(infinity, checkpoint, prompted, queries, tokens,
                                            args.clients, reference[:4]))
        else:
            unavailable.append("Infinity (infinity-emb): no `infinity_emb` found; it needs its "
                               "own environment (numpy<2, sentence-transformers<4): see "
                               "benchmarks/README.md")

        if args.st_backends and Path(args.st_backends).exists():
            for backend in engines.ST_BACKENDS:
                print(f"[bench] peer: sentence-transformers {backend}", file=sys.stderr)
                try:
                    results.append(engines.sentence_transformers_backend(
                        args.st_backends, backend, checkpoint, prompted, queries, tokens,
                        reference, engines.calibration_sentences(prompts)))
                except RuntimeError as exc:
                    unavailable.append(f"sentence-transformers {backend}: failed: {exc}")
        else:
            unavailable.append("sentence-transformers ONNX/OpenVINO backends: no "
                               "`--st-backends PYTHON` given (see benchmarks/README.md)")
        if args.embroider and Path(args.embroider).exists():
            print("[bench] peer: embroider", file=sys.stderr)
            results.append(engines.embroider(
                args.embroider, assets.unpooled_onnx(checkpoint), bundle_dir / "tokenizer.json",
                texts, queries, tokens, reference))
        else:
            unavailable.append("embroider: no `--embroider PYTHON` given; it runs in its own "
                               "environment (see benchmarks/README.md)")

    table = report.rows(results, limits)
    settings = {"threads": args.threads, "clients": args.clients, "seed": args.seed,
                "max_batch_tokens": args.max_batch_tokens, "workload": workload,
                "tokens": tokens, "latency_queries": len(queries),
                "auto": report.auto_line(auto, results)}
    name = args.name or f"{'quick' if args.quick else 'full'}-{datetime.date.today()}"
    path = report.write(args.out, name, table, limits, report.machine(), settings, unavailable,
                        results)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
