"""python -m benchmarks.openvino_profile: where an OpenVINO forward pass spends its time, by
batch shape, from the CPU plugin's own per-node counters (PERF_COUNT).

Three batches cut from the full workload as the server forms them (16 short queries, 8
~128-token documents, 2 ~512-token documents), each run twice and the second timed and
profiled: the pass's tokens/s (wall clock) at that shape against the host's GEMM ceiling, the
time per kind of node and kernel (which says, for one, whether the int8 and bf16 matmuls run
on AMX), and how much of the pass the nodes' counters account for.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import assets, limit, report
from benchmarks.workload import sized_workload
from embedrpc.service.runtimes import hostinfo, openvino_runtime
from embedrpc.service.runtimes.interface import RuntimeOptions, pad

# (label, which workload texts, how many): the shapes the server's batches take
SHAPES = [("16 queries", "query", 16), ("8 ~128-token documents", "doc128", 8),
          ("2 ~512-token documents", "doc512", 2)]
TOP = 6  # node kinds listed per shape


def main(argv=None) -> int:
    import openvino

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--artifacts", default="openvino-int8,openvino-bf16")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    checkpoint, bundle_dir = assets.bundle()
    from embedrpc.service.bundle.bundle import Bundle

    bundle = Bundle(bundle_dir)
    tokenizer, prompts = bundle.tokenizer(4096), bundle.manifest.prompts
    by_kind = collections.defaultdict(list)
    for text in sized_workload(tokenizer.count_tokens, "full", args.seed):
        by_kind[text.kind].append(tokenizer.encode([text.prompted(prompts)])[0])
    every = [ids for kind in by_kind.values() for ids in kind]
    config = json.loads((checkpoint / "config.json").read_text())
    limits = limit.ceilings(config, sum(map(len, every)) / len(every), args.threads)
    ceilings = {"int8": limits["int8_tokens_per_s"], "f32": limits["fp32_tokens_per_s"],
                "bf16": limits["bf16_tokens_per_s"] or float("nan")}
    core, sections = openvino.Core(), []
    for name in args.artifacts.split(","):
        artifact = bundle.manifest.artifact(name)
        inference = openvino_runtime.inference_precision(core, artifact.precision)
        config = {**openvino_runtime.compile_config(inference,
                                                    RuntimeOptions(threads=args.threads)),
                  "PERF_COUNT": True}
        request = core.compile_model(str(bundle.path_of(artifact)), "CPU",
                                     config).create_infer_request()
        ceiling_name = "int8" if artifact.precision == "int8" else inference
        sections += [f"## {name} (against the {ceiling_name} ceiling, "
                     f"{ceilings[ceiling_name]:.0f} tokens/s)", ""]
        for label, kind, count in SHAPES:
            ids, mask = pad(by_kind[kind][:count], bundle.manifest.tokenizer.pad_token_id,
                            openvino_runtime.PADDING_SIDE)
            request.infer({"input_ids": ids, "attention_mask": mask})  # pays for the shape
            started = time.perf_counter()
            request.infer({"input_ids": ids, "attention_mask": mask})
            wall = time.perf_counter() - started
            sections += _shape_lines(label, ids.shape, int(mask.sum()), wall,
                                     request.profiling_info, ceilings[ceiling_name])
    host, cpu = report.machine(), hostinfo.cpu()
    text = "\n".join([
        f"# OpenVINO pass profile on {host['cpu']} ({datetime.date.today()})", "",
        *sections,
        f"Per-node real time from OpenVINO's PERF_COUNT on the second pass of each shape, "
        f"{args.threads} threads, embedrpc's compile settings; `Subgraph` is the plugin's "
        f"fused attention, `FullyConnected` the projections and MLP. Ceilings as in the full "
        f"benchmark (benchmarks/limit.py, at the full workload's mean context). This host: "
        f"{cpu.label}. openvino {host['versions'].get('openvino')}.", ""])
    report.write_focused(args.out, "openvino-profile", text)
    return 0


def _shape_lines(label: str, shape, tokens: int, wall: float, profile, ceiling: float
                 ) -> list[str]:
    by_kernel: collections.Counter = collections.Counter()
    for node in profile:
        by_kernel[(node.node_type, node.exec_type)] += node.real_time.total_seconds()
    nodes = sum(by_kernel.values())
    rate = tokens / wall
    lines = [f"**{label}** (batch {shape[0]} × {shape[1]}, {tokens} tokens): {wall * 1e3:.0f} "
             f"ms, {rate:.0f} tokens/s = {rate / ceiling:.0%} of the ceiling; the nodes' "
             f"counters account for {nodes * 1e3:.0f} ms ({nodes / wall:.0%} of the pass)", "",
             "| node | kernel | ms | share of the pass |", "|---|---|--:|--:|"]
    for (node, kernel), seconds in by_kernel.most_common(TOP):
        lines.append(f"| {node} | {kernel} | {seconds * 1e3:.1f} | {seconds / wall:.0%} |")
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
