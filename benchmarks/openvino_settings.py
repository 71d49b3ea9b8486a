"""python -m benchmarks.openvino_settings: OpenVINO's CPU serving settings swept on this host.

Each setting runs the bundle's IR in its own child process (its peak RSS is its own) over the
full workload's texts, batched as the server batches them when 16 clients keep one text each
in flight (or, for one row, the whole queue sorted as the raw benchmark does), and measures:
the time to a compiled model and its first answer, the first pass over the texts (every batch
shape new to the plugin, as on a fresh server) and a repeated pass (shapes seen), and the
child's peak RSS. Rounds interleave the settings, so a noisy neighbour hits each one.

Settings: the performance hint and streams (THROUGHPUT with two streams keeps two batches in
flight, which embedrpc's one-batch-at-a-time scheduler would have to learn), the token budget
of a batch, CPU pinning, weights read through mmap or not, and a start from OpenVINO's
compiled-model cache (what `embedrpc serve` does after its first start).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import assets, report
from benchmarks.engines import vm_hwm_kb
from benchmarks.workload import sized_workload
from embedrpc.service.runtimes import hostinfo, openvino_runtime
from embedrpc.service.runtimes.batching import BatchPolicy, plan_batches, take_batch
from embedrpc.service.runtimes.interface import CPU_MAX_PADDING_RATIO, RuntimeOptions, pad

EMBEDRPC = "embedrpc's (LATENCY hint, 1 stream)"
# name: (plugin settings over embedrpc's, batches in flight, token budget, clients, cached)
SETTINGS = {
    EMBEDRPC: ({}, 1, 4096, 16, False),
    "THROUGHPUT hint, 2 streams, 2 batches in flight": (
        {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}, 2, 4096, 16, False),
    "THROUGHPUT hint, 1 batch in flight": ({"PERFORMANCE_HINT": "THROUGHPUT"}, 1, 4096, 16,
                                           False),
    "token budget 1024": ({}, 1, 1024, 16, False),
    "token budget 2048": ({}, 1, 2048, 16, False),
    "token budget 8192": ({}, 1, 8192, 16, False),
    "whole queue batched (as the raw benchmark batches)": ({}, 1, 4096, 0, False),
    "CPU pinning off": ({"ENABLE_CPU_PINNING": False}, 1, 4096, 16, False),
    "weights read, not mmap'd": ({"ENABLE_MMAP": False}, 1, 4096, 16, False),
    "started from the compiled-model cache": ({}, 1, 4096, 16, True),
}


def served_plan(lengths: list[int], policy: BatchPolicy, clients: int) -> list[list[int]]:
    """The scheduler's batches when `clients` each keep one text in flight and send the next
    as soon as theirs is answered; 0 clients: the whole list queued at once (`plan_batches`)."""
    if not clients:
        return plan_batches(lengths, policy)
    sent = min(clients, len(lengths))
    waiting, batches = list(range(sent)), []
    while waiting:
        picked = set(take_batch([lengths[i] for i in waiting], policy))
        batches.append([index for i, index in enumerate(waiting) if i in picked])
        waiting = [index for i, index in enumerate(waiting) if i not in picked]
        answered = len(batches[-1])
        waiting += range(sent, min(sent + answered, len(lengths)))
        sent = min(sent + answered, len(lengths))
    return batches


def _feed(sequences: list[list[int]], pad_id: int) -> dict:
    ids, mask = pad(sequences, pad_id, openvino_runtime.PADDING_SIDE)
    return {"input_ids": ids, "attention_mask": mask}


def measure(payload: dict) -> dict:
    """Child side: one setting's open time, first and repeated pass, peak RSS."""
    import openvino

    started = time.perf_counter()
    core = openvino.Core()
    inference = openvino_runtime.inference_precision(core, payload["precision"])
    options = RuntimeOptions(threads=payload["threads"], compiled_cache=payload["cache"])
    config = {**openvino_runtime.compile_config(inference, options), **payload["settings"]}
    compiled = core.compile_model(payload["path"], "CPU", config)
    queue = openvino.AsyncInferQueue(compiled, payload["in_flight"])
    sequences = payload["sequences"]
    queue.start_async(_feed(sequences[:1], payload["pad_id"]))
    queue.wait_all()
    first_answer = time.perf_counter() - started
    policy = BatchPolicy(payload["budget"], max_padding_ratio=CPU_MAX_PADDING_RATIO)
    batches = served_plan([len(s) for s in sequences], policy, payload["clients"])
    inputs = [_feed([sequences[i] for i in batch], payload["pad_id"]) for batch in batches]
    passes = []
    for _ in range(payload["passes"]):
        began = time.perf_counter()
        for feed in inputs:
            queue.start_async(feed)
        queue.wait_all()
        passes.append(time.perf_counter() - began)
    return {"first_answer": first_answer, "passes": passes, "batches": len(batches),
            "rss_mib": vm_hwm_kb(os.getpid()) / 1024,
            "streams": compiled.get_property("NUM_STREAMS")}


def main(argv=None) -> int:
    from embedrpc.service.runtimes.isolation import ChildFailed, run_isolated

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--artifacts", default="openvino-int8,openvino-bf16")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    _, bundle_dir = assets.bundle()
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    tokenizer = bundle.tokenizer(4096)
    prompts = bundle.manifest.prompts
    texts = sized_workload(tokenizer.count_tokens, "full", args.seed)
    sequences = [tokenizer.encode([t.prompted(prompts)])[0] for t in texts]
    tokens = sum(map(len, sequences))
    sections = []
    for name in args.artifacts.split(","):
        artifact = bundle.manifest.artifact(name)
        with tempfile.TemporaryDirectory(prefix="embedrpc-ov-cache-") as cache:
            payload = {"path": str(bundle.path_of(artifact)), "precision": artifact.precision,
                       "threads": args.threads, "sequences": sequences, "passes": 2,
                       "pad_id": bundle.manifest.tokenizer.pad_token_id}

            def run(setting: str, cache=cache, payload=payload):
                plugin, in_flight, budget, clients, cached = SETTINGS[setting]
                return run_isolated("benchmarks.openvino_settings:measure", {
                    **payload, "settings": plugin, "in_flight": in_flight, "budget": budget,
                    "clients": clients, "cache": cache if cached else ""}, timeout=1800)

            run("started from the compiled-model cache")  # fills the cache
            samples: dict[str, list] = {setting: [] for setting in SETTINGS}
            for round_ in range(args.rounds):
                for setting, runs in samples.items():
                    print(f"[bench] {name} round {round_ + 1}: {setting}", file=sys.stderr)
                    try:
                        runs.append(run(setting))
                    except ChildFailed as failure:
                        runs.append(failure.reason)
        sections += [f"## {name} ({artifact.bytes / 2**20:.0f} MiB)", "",
                     *_table(samples, tokens, artifact.bytes / 2**20), ""]
    host, cpu = report.machine(), hostinfo.cpu()
    text = "\n".join([
        f"# OpenVINO serving settings on {host['cpu']} ({datetime.date.today()})", "",
        *sections,
        f"{len(sequences)} texts / {tokens} tokens (the full workload, seed {args.seed}), "
        f"{args.threads} threads, medians of {args.rounds} interleaved rounds, each setting in "
        f"its own process. `first pass`: every batch shape new to the plugin; `repeated`: the "
        f"same batches again. `open + first answer`: compiling (or loading from the cache) and "
        f"the workload's first text. This host: {cpu.label}. openvino "
        f"{host['versions'].get('openvino')}.", ""])
    report.write_focused(args.out, "openvino-settings", text)
    return 0


def _table(samples: dict[str, list], tokens: int, artifact_mib: float) -> list[str]:
    base = statistics.median(tokens / r["passes"][-1] for r in samples[EMBEDRPC]
                             if isinstance(r, dict))
    lines = ["| setting | streams | batches | first pass tok/s | repeated tok/s | "
             "× embedrpc's | open + first answer s | peak RSS MiB (× artifact) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for setting, runs in samples.items():
        failed = [r for r in runs if isinstance(r, str)]
        if failed:
            lines.append(f"| {setting} | {failed[0]} | | | | | | |")
            continue
        first = statistics.median(tokens / r["passes"][0] for r in runs)
        repeated = statistics.median(tokens / r["passes"][-1] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        lines.append(f"| {setting} | {runs[0]['streams']} | {runs[0]['batches']} | {first:.0f} "
                     f"| {repeated:.0f} | {repeated / base:.2f} | "
                     f"{statistics.median(r['first_answer'] for r in runs):.2f} | "
                     f"{rss:.0f} ({rss / artifact_mib:.2f}) |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
