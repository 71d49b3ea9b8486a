"""python -m benchmarks.cache: the embedding cache under traffic that repeats itself.

At the 0.6B shape (the benchmark bundle), one `embedrpc serve` with the cache off
(`--cache-bytes 0`) and one with its default budget, each started empty, take the same stream
of one-text requests from concurrent gRPC clients: the workload's queries and documents, of
which a stated share are repeats of texts sent earlier in the stream (re-indexed chunks, popular
queries), drawn uniformly from those. tokens/s counts every requested token, repeats included:
what the clients get. The hit count is the server's own metric. Off and on alternate, the best
of the rounds kept for each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import sys
import urllib.request
from pathlib import Path

from benchmarks import assets, report
from benchmarks.engines import free_port, saturate, serving
from benchmarks.workload import Text, make_workload
from embedrpc.service.runtimes import hostinfo

DEFAULT_BUDGET = "default (128 MiB)"


def stream(unique: list[Text], repeat_rate: float, seed: int) -> list[Text]:
    """`unique` in order, with repeats of earlier texts inserted so that `repeat_rate` of the
    stream's requests are repeats."""
    rng = random.Random(seed)
    total = round(len(unique) / (1 - repeat_rate))
    repeats = set(rng.sample(range(1, total), total - len(unique)))
    sent: list[Text] = []
    fresh = iter(unique)
    for position in range(total):
        sent.append(rng.choice(sent) if position in repeats else next(fresh))
    return sent


def served(bundle_dir: Path, artifact: str, texts: list[Text], threads: int, clients: int,
           cache_bytes: str | None) -> tuple[float, int]:
    """(seconds for the stream, cache hits) through a fresh `embedrpc serve`."""
    from embedrpc.v1 import embedding_pb2 as pb

    metrics_port = free_port()
    flags = ["--cache-bytes", cache_bytes] if cache_bytes is not None else []
    with serving(bundle_dir, artifact, threads, *flags, metrics_port=metrics_port) as (_, stub):
        def send(text: Text) -> None:
            stub.Embed(pb.EmbedRequest(
                inputs=[text.text],
                task=pb.TASK_QUERY if text.kind == "query" else pb.TASK_DOCUMENT), timeout=600)

        seconds = saturate(send, texts, clients)
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
        found = re.search(r"^embedrpc_cache_hits_total (\S+)", page, re.M)
        return seconds, int(float(found.group(1))) if found else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", default="openvino-int8")
    parser.add_argument("--repeat-rate", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    from embedrpc.service.bundle.bundle import Bundle

    _, bundle_dir = assets.bundle()
    bundle = Bundle(bundle_dir)
    prompts, tokenizer = bundle.manifest.prompts, bundle.tokenizer(2048)
    unique = make_workload(tokenizer.count_tokens, 96, 32, 8, args.seed)
    texts = stream(unique, args.repeat_rate, args.seed)
    tokens = sum(tokenizer.count_tokens(t.prompted(prompts)) for t in texts)
    distinct = len({(text.kind, text.text) for text in texts})  # the workload repeats some too
    repeats = len(texts) - distinct

    best: dict[str, tuple[float, int]] = {}
    for round_ in range(args.rounds):
        for label, budget in (("off (--cache-bytes 0)", "0"), (DEFAULT_BUDGET, None)):
            print(f"[bench] cache {label}, round {round_ + 1}", file=sys.stderr)
            seconds, hits = served(bundle_dir, args.artifact, texts, args.threads,
                                   args.clients, budget)
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, hits)
    off = tokens / best["off (--cache-bytes 0)"][0]
    table = ["| cache | tokens/s (every requested token) | hits | on / off |",
             "|---|--:|--:|--:|"]
    for label, (seconds, hits) in best.items():
        table.append(f"| {label} | {tokens / seconds:.0f} | {hits} | "
                     f"{tokens / seconds / off:.2f} |")
    cpu = hostinfo.cpu()
    text = "\n".join([
        f"# The embedding cache, on {report.machine()['cpu']} ({datetime.date.today()})", "",
        f"This host: {cpu.label}; AMX {'present' if cpu.has_amx else 'absent'}. 0.6B shape "
        f"(random weights), `embedrpc serve --artifact {args.artifact}`, {args.threads} "
        f"threads, {args.clients} gRPC clients one text per request. The stream: "
        f"{len(texts)} requests / {tokens} tokens: the workload's {len(unique)} queries and "
        f"128/512-token documents (seed {args.seed}) with {len(texts) - len(unique)} repeats "
        f"of earlier ones inserted; {distinct} distinct texts, so {repeats} requests "
        f"({repeats / len(texts):.0%}) repeat an earlier one; each server "
        f"started empty; best of {args.rounds} alternating rounds.", "", *table, "",
        "A repeat that arrives while its first copy is still being computed waits for it "
        "(counted as a hit); with the cache off every request is computed.", ""])
    report.write_focused(args.out, "cache", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
