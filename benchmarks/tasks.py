"""python -m benchmarks.tasks: four tasks from one process against one merged task per process.

At the 0.6B shape, with a random replica of the base repo (four LoRA adapters, r 32):
- a four-task bundle (`embedrpc export --tasks all`) and a merged retrieval bundle
  (`--task retrieval`), the same artifacts of each;
- per artifact, `embedrpc serve` of each: the inference worker's peak RSS (what four merged
  processes would hold is four times the merged one's), tokens/s of one task, and of the same
  texts with the four tasks interleaved request by request (the scheduler batches within one
  task, the runtime switches adapters between batches);
- the cost of one adapter switch, in process: a one-text batch after a batch of another task
  against one after the same task;
- fidelity of the quantised artifacts: the backbone quantised with the LoRA branch in float (the
  four-task bundle) against the merged model quantised (the merged bundle), both measured
  against the same oracle (peft's merge of the retrieval adapter, sentence-transformers).
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
from benchmarks.engines import _children_rss_mb, saturate, serving
from benchmarks.workload import sized_workload
from embedrpc.service.runtimes import hostinfo
from embedrpc.service.runtimes.isolation import run_isolated

TASKS = ("retrieval", "text-matching", "clustering", "classification")
ARTIFACTS = ("onnx-int8", "openvino-int8", "gguf-q8_0")
ROUNDS = 3


def bundles(shape: str = "qwen3-0.6b") -> tuple[Path, Path]:
    """(four-task bundle, merged retrieval bundle) at `shape`, exported once and cached."""
    from embedrpc.export.pipeline import export_bundle
    from fixtures.random_checkpoint import build_random_checkpoint

    checkpoint = assets.CACHE / f"{shape}-base-checkpoint"
    if not (checkpoint / "config.json").is_file():
        print(f"[bench] building a random {shape} base-repo replica", file=sys.stderr)
        build_random_checkpoint(checkpoint, shape, appends_eos=True, max_seq_length=32768,
                                layout="base")
    four, merged = assets.CACHE / f"{shape}-four-task-bundle", \
        assets.CACHE / f"{shape}-retrieval-bundle"
    for out, options in ((four, {"tasks": "all"}), (merged, {"task": "retrieval"})):
        if not (out / "manifest.json").is_file():
            print(f"[bench] exporting {out.name}", file=sys.stderr)
            export_bundle(str(checkpoint), out, formats=",".join(ARTIFACTS), force=True,
                          **options)
    return four, merged


def served(bundle_dir: Path, artifact: str, texts, threads: int, clients: int,
           mixes: dict[str, list[str]]) -> dict:
    """Tokens/s of each named mix of adapters (one per text, "" = the default) through one
    `embedrpc serve`, and its worker's peak RSS after all of them."""
    from embedrpc.v1 import embedding_pb2 as pb

    # --cache-bytes 0: every mix computed, none kept
    with serving(bundle_dir, artifact, threads, "--cache-bytes", "0") as (process, stub):
        def send(item) -> None:
            text, adapter = item
            stub.Embed(pb.EmbedRequest(
                inputs=[text.text], adapter=adapter,
                task=pb.TASK_QUERY if text.kind == "query" else pb.TASK_DOCUMENT), timeout=600)

        timings: dict[str, list[float]] = {name: [] for name in mixes}
        for _ in range(ROUNDS):  # the mixes interleaved, the best round of each kept
            for name, adapters in mixes.items():
                timings[name].append(saturate(send, list(zip(texts, adapters, strict=True)),
                                              clients))
        return {"seconds": {name: min(values) for name, values in timings.items()},
                "worker_rss_mb": _children_rss_mb(process.pid)}


def switch_cost(payload: dict) -> dict:
    """Child side: median ms of a one-text batch after the same task and after another."""
    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.runtimes.interface import options_for
    from embedrpc.service.runtimes.registry import open_runtime

    bundle = Bundle(Path(payload["bundle"]))
    runtime = open_runtime(bundle, payload["artifact"],
                           options_for(bundle, threads=payload["threads"]))
    sequence = [payload["sequence"]]
    try:
        timings: dict[str, list[float]] = {"same": [], "switch": []}
        for round_ in range(payload["rounds"]):
            for label, task in (("same", TASKS[0]), ("switch", TASKS[1 + round_ % 3])):
                runtime.embed_batch(sequence, task=TASKS[0])
                began = time.perf_counter()
                runtime.embed_batch(sequence, task=task)
                timings[label].append((time.perf_counter() - began) * 1000)
        return {label: statistics.median(values) for label, values in timings.items()}
    finally:
        runtime.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--artifacts", default=",".join(ARTIFACTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    from embedrpc.service.bundle.bundle import Bundle

    four_dir, merged_dir = bundles()
    four, merged = Bundle(four_dir), Bundle(merged_dir)
    tokenizer = four.tokenizer(2048)
    texts = sized_workload(tokenizer.count_tokens, "full", args.seed)
    prompts = four.manifest.prompts
    tokens = sum(tokenizer.count_tokens(t.prompted(prompts)) for t in texts)
    one_task = [TASKS[0]] * len(texts)
    mixed = [TASKS[i % len(TASKS)] for i in range(len(texts))]
    short = tokenizer.encode([prompts["query"] + "what is a vector database?"])[0]

    rows, fidelity = [], []
    for artifact in args.artifacts.split(","):
        print(f"[bench] {artifact}: four-task server", file=sys.stderr)
        many = served(four_dir, artifact, texts, args.threads, args.clients,
                      {"one": one_task, "mixed": mixed})
        print(f"[bench] {artifact}: merged single-task server", file=sys.stderr)
        single = served(merged_dir, artifact, texts, args.threads, args.clients,
                        {"one": [""] * len(texts)})
        cost = run_isolated("benchmarks.tasks:switch_cost", {
            "bundle": str(four_dir), "artifact": artifact, "threads": args.threads,
            "sequence": short, "rounds": 30}, timeout=1800)
        rows.append((artifact, many, single, cost))
        kept = four.manifest.artifact(artifact).task_parity[TASKS[0]]
        folded = merged.manifest.artifact(artifact).parity
        fidelity.append((artifact, kept, folded))

    cpu = hostinfo.cpu()
    host = report.machine()
    memory = ["| artifact | artifact MiB | worker peak RSS: 4 tasks, 1 process | 1 merged task | "
              "4 merged processes | 4-task / 1 merged (goal ≤ 1.3) |", "|---|--:|--:|--:|--:|--:|"]
    speed = ["| artifact | 1 merged task tokens/s | 4-task server, 1 task | 4 tasks interleaved | "
             "interleaved / 1 task (goal ≥ 0.85) | one-text batch: same task ms | after a "
             "switch ms |", "|---|--:|--:|--:|--:|--:|--:|"]
    for artifact, many, single, cost in rows:
        artifact_mb = four.manifest.artifact(artifact).bytes / 2**20
        four_rss, one_rss = many["worker_rss_mb"], single["worker_rss_mb"]
        memory.append(f"| {artifact} | {artifact_mb:.0f} | {four_rss:.0f} | {one_rss:.0f} | "
                      f"{4 * one_rss:.0f} | {four_rss / one_rss:.2f} |")
        rate = {name: tokens / seconds for name, seconds in many["seconds"].items()}
        merged_rate = tokens / single["seconds"]["one"]
        speed.append(f"| {artifact} | {merged_rate:.0f} | {rate['one']:.0f} | "
                     f"{rate['mixed']:.0f} | {rate['mixed'] / rate['one']:.2f} | "
                     f"{cost['same']:.1f} | {cost['switch']:.1f} |")
    quality = ["| artifact | LoRA in float over the quantised backbone: min / mean cos | merged, "
               "then quantised: min / mean cos | closer to the oracle |", "|---|--:|--:|---|"]
    for artifact, kept, folded in fidelity:
        closer = "LoRA in float" if kept.mean_cosine > folded.mean_cosine else "merged"
        quality.append(f"| {artifact} | {kept.min_cosine:.5f} / {kept.mean_cosine:.5f} | "
                       f"{folded.min_cosine:.5f} / {folded.mean_cosine:.5f} | {closer} |")
    text = "\n".join([
        f"# Four tasks, one process, on {host['cpu']} ({datetime.date.today()})", "",
        f"This host: {cpu.label}; AMX {'present' if cpu.has_amx else 'absent'}. 0.6B shape, "
        "random weights, a replica of the base repo with four random LoRA adapters (r 32, "
        f"α 32, every projection). {len(texts)} texts / {tokens} tokens (the workload's "
        f"queries and 128/512-token documents, seed {args.seed}), {args.clients} gRPC clients "
        f"one text per request, {args.threads} threads, `embedrpc serve --artifact "
        f"--cache-bytes 0` each; every rate the best of {ROUNDS} interleaved rounds.", "",
        "**Memory** (VmHWM of the inference worker, after both workloads):", "", *memory, "",
        "**Speed** (\"interleaved\": the same texts, request i with task i mod 4; the switch "
        "cost: a one-text batch right after a batch of the same task or of another, median "
        "of 30, in process):", "", *speed, "",
        "**Fidelity of int8 with tasks at run time** (parity against the retrieval task's "
        "oracle, recorded by each export):", "", *quality, ""])
    report.write_focused(args.out, "tasks", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
