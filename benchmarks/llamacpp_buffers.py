"""python -m benchmarks.llamacpp_buffers: what llama.cpp's extra CPU weight buffers are worth.

ggml can place weights in "extra" buffer types: repacked layouts for its AVX2/AVX-512 Q8_0 and
Q4_K kernels, and AMX tiles where the CPU has AMX, whose matmul segfaults on some Xeons
(upstream llama.cpp#20824). embedrpc turns them off on x86-64
(`llamacpp_runtime.uses_extra_buffers`); this measures what that choice costs or gains: Q8_0
and Q4_K_M at the 0.6B shape, with and without extra buffers, on this host. Each run is a child
process, so a crashing combination is a row saying so, not a dead benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks import assets, report
from benchmarks.workload import sized_workload
from embedrpc.service.runtimes import hostinfo, llamacpp_runtime
from embedrpc.service.runtimes.interface import RuntimeOptions
from embedrpc.service.runtimes.isolation import ChildFailed, run_isolated

PRECISIONS = ("q8_0", "q4_k_m")


def quantised(bundle_dir: Path, precision: str) -> Path:
    """The bundle's GGUF of `precision`, or one made from its F16 into the cache."""
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    present = {a.name: a for a in bundle.manifest.artifacts}
    if f"gguf-{precision}" in present:
        return bundle.path_of(present[f"gguf-{precision}"])
    target = assets.CACHE / f"model-{precision}.gguf"
    if not target.is_file():
        from embedrpc.export.gguf_export import quantize

        quantize(bundle.path_of(present["gguf-f16"]), target, precision)
    return target


def measure(payload: dict) -> dict:
    """Child side: raw tokens/s of one GGUF with extra buffers on or off."""
    llamacpp_runtime.uses_extra_buffers = lambda: payload["extra"]
    sequences, budget = payload["sequences"], payload["max_batch_tokens"]
    runtime = llamacpp_runtime.LlamaCppRuntime(
        Path(payload["path"]), artifact=Path(payload["path"]).stem, precision="",
        options=RuntimeOptions(threads=payload["threads"], max_batch_tokens=budget))
    try:
        runtime.embed(sequences[:2])
        started = time.perf_counter()
        runtime.embed(sequences)
        return {"seconds": time.perf_counter() - started}
    finally:
        runtime.close()


def _summary(rates: list) -> tuple[float | None, str]:
    """(median tokens/s, its table cell); a crash in any round is what the cell says."""
    failures = [rate for rate in rates if isinstance(rate, str)]
    if failures:
        return None, failures[0]
    median = statistics.median(rates)
    return median, f"{median:.0f} ({min(rates):.0f}–{max(rates):.0f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    checkpoint, bundle_dir = assets.bundle()
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    tokenizer = bundle.tokenizer(args.max_batch_tokens)
    prompts = bundle.manifest.prompts
    texts = sized_workload(tokenizer.count_tokens, "quick", args.seed)
    sequences = [tokenizer.encode([t.prompted(prompts)])[0] for t in texts]
    tokens = sum(map(len, sequences))
    paths = {precision: quantised(bundle_dir, precision) for precision in PRECISIONS}
    samples: dict[tuple[str, bool], list] = {(p, e): [] for p in PRECISIONS for e in (True, False)}
    for round_ in range(args.rounds):  # interleaved, so a noisy neighbour hits every setting
        for (precision, extra), rates in samples.items():
            print(f"[bench] round {round_ + 1}: {precision}, extra buffers "
                  f"{'on' if extra else 'off'}", file=sys.stderr)
            try:
                seconds = run_isolated("benchmarks.llamacpp_buffers:measure", {
                    "path": str(paths[precision]), "extra": extra, "sequences": sequences,
                    "threads": args.threads, "max_batch_tokens": args.max_batch_tokens},
                    timeout=1800)["seconds"]
                rates.append(tokens / seconds)
            except ChildFailed as failure:
                rates.append(failure.reason)
    rows = [(precision, {extra: _summary(samples[precision, extra]) for extra in (True, False)})
            for precision in PRECISIONS]
    cpu = hostinfo.cpu()
    lines = ["| GGUF | extra buffers on: tokens/s (min–max) | off: tokens/s (min–max) | off / on |",
             "|---|--:|--:|--:|"]
    for precision, summary in rows:
        (on, on_text), (off, off_text) = summary[True], summary[False]
        ratio = f"{off / on:.2f}" if on and off else "—"
        lines.append(f"| {precision.upper()} | {on_text} | {off_text} | {ratio} |")
    host = report.machine()
    text = "\n".join([
        f"# llama.cpp extra weight buffers on {host['cpu']} ({datetime.date.today()})", "",
        *lines, "",
        f"Raw in-process rate, median of {args.rounds} interleaved rounds, {len(sequences)} "
        f"texts / {tokens} tokens (the quick workload, seed {args.seed}), 0.6B shape, "
        f"{args.threads} threads, batch budget "
        f"{args.max_batch_tokens}. This host: {cpu.label}; AMX "
        f"{'present' if cpu.has_amx else 'absent'}; embedrpc serves with extra buffers "
        f"{'on' if llamacpp_runtime.uses_extra_buffers() else 'off'} here. "
        f"llama_cpp {host['versions'].get('llama_cpp')}.", ""])
    report.write_focused(args.out, "llamacpp-buffers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
