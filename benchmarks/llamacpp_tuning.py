"""python -m benchmarks.llamacpp_tuning: how long one llama.cpp decode pass should be.

Every token of a pass attends over the whole pass (sequences are packed into one unified KV
cache and masked apart), and in embedding mode llama.cpp computes and keeps the LM head's
logits for every token of a pass (0.6 MB per token at Qwen3's vocabulary), so a long pass costs
attention and memory, a short one matmul efficiency. This measures raw tokens/s, the worker's
peak RSS and how far a text moves with its batch-mates, per pass length and KV cache type, at
the 0.6B shape on this host; 2048 is how embedrpc ran before (one pass = the batch budget).
Each setting runs in a child process (its RSS is its own).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import assets, report
from benchmarks.engines import vm_hwm_kb
from benchmarks.workload import sized_workload
from embedrpc.service.runtimes import hostinfo, llamacpp_runtime
from embedrpc.service.runtimes.interface import RuntimeOptions
from embedrpc.service.runtimes.isolation import ChildFailed, run_isolated

SETTINGS = [(2048, "f32"), (1024, "f32"), (512, "f32"), (256, "f32"), (128, "f32"),
            (512, "f16"), (256, "f16")]


def measure(payload: dict) -> dict:
    """Child side: tokens/s of one pass length and KV type, its peak RSS, batch-mate shift."""
    llamacpp_runtime.PASS_TOKENS = payload["pass_tokens"]
    sequences = payload["sequences"]
    options = RuntimeOptions(threads=payload["threads"], max_batch_tokens=2048,
                             settings={llamacpp_runtime.KV_TYPE.name: payload["kv_type"]})
    runtime = llamacpp_runtime.LlamaCppRuntime(Path(payload["path"]), artifact="gguf",
                                               precision="", options=options)
    try:
        runtime.embed(sequences[:2])
        started = time.perf_counter()
        together = runtime.embed(sequences)
        seconds = time.perf_counter() - started
        alone = np.vstack([runtime.embed_batch([s]) for s in sequences[:payload["shift_texts"]]])
    finally:
        runtime.close()
    shift = float(np.max(np.abs(together[:len(alone)] - alone)))
    return {"seconds": seconds, "rss_mib": vm_hwm_kb(os.getpid()) / 1024, "shift": shift}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--artifact", default="gguf-q8_0")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    _, bundle_dir = assets.bundle()
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    artifact = bundle.manifest.artifact(args.artifact)
    tokenizer = bundle.tokenizer(2048)
    prompts = bundle.manifest.prompts
    texts = sized_workload(tokenizer.count_tokens, "quick", args.seed)
    sequences = [tokenizer.encode([t.prompted(prompts)])[0] for t in texts]
    tokens = sum(map(len, sequences))
    samples: dict[tuple[int, str], list] = {setting: [] for setting in SETTINGS}
    for round_ in range(args.rounds):  # interleaved, so a noisy neighbour hits every setting
        for (pass_tokens, kv_type), runs in samples.items():
            print(f"[bench] round {round_ + 1}: pass {pass_tokens}, KV {kv_type}",
                  file=sys.stderr)
            try:
                runs.append(run_isolated("benchmarks.llamacpp_tuning:measure", {
                    "path": str(bundle.path_of(artifact)), "pass_tokens": pass_tokens,
                    "kv_type": kv_type, "sequences": sequences, "threads": args.threads,
                    "shift_texts": 8}, timeout=1800))
            except ChildFailed as failure:
                runs.append(failure.reason)
    before = statistics.median(tokens / r["seconds"] for r in samples[SETTINGS[0]]
                               if isinstance(r, dict))
    lines = ["| pass tokens | KV cache | tokens/s, median (min–max) | × pass 2048 | "
             "peak RSS MiB | batch-mate shift |", "|--:|---|--:|--:|--:|--:|"]
    for (pass_tokens, kv_type), runs in samples.items():
        failed = [r for r in runs if isinstance(r, str)]
        if failed:
            lines.append(f"| {pass_tokens} | {kv_type} | {failed[0]} | | | |")
            continue
        rates = [tokens / r["seconds"] for r in runs]
        median = statistics.median(rates)
        lines.append(f"| {pass_tokens} | {kv_type} | {median:.0f} ({min(rates):.0f}–"
                     f"{max(rates):.0f}) | {median / before:.2f} | "
                     f"{max(r['rss_mib'] for r in runs):.0f} | "
                     f"{max(r['shift'] for r in runs):.1e} |")
    host, cpu = report.machine(), hostinfo.cpu()
    text = "\n".join([
        f"# llama.cpp pass length on {host['cpu']} ({datetime.date.today()})", "",
        *lines, "",
        f"{args.artifact} at the 0.6B shape ({artifact.bytes / 2**20:.0f} MiB), raw in-process "
        f"rate, {args.rounds} interleaved rounds, {len(sequences)} texts / {tokens} tokens "
        f"(the quick workload, seed {args.seed}), {args.threads} threads, batch budget 2048. "
        f"Peak RSS is the child's VmHWM (weights mapped, KV cache, logits and compute "
        f"buffers). Batch-mate shift: the largest change of a vector component between a "
        f"text embedded with its batch-mates and alone (first 8 texts). This host: "
        f"{cpu.label}. llama_cpp {host['versions'].get('llama_cpp')}; embedrpc serves with "
        f"passes of {llamacpp_runtime.PASS_TOKENS} tokens.", ""])
    report.write_focused(args.out, "llamacpp-passes", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
