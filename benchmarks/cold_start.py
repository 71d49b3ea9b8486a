"""python -m benchmarks.cold_start: process start to first answer of `embedrpc serve`, per
artifact, as a restart sees it (the self-check's verdict, the checksums and OpenVINO's compiled
model cached by a first start that is not counted); median and slowest of `--starts`."""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import assets, report
from benchmarks.engines import PROMPT_RECONNECT, first_answer, free_port, serve_command
from embedrpc.service.runtimes import hostinfo

ARTIFACTS = {"openvino-int8": "openvino-cpu", "openvino-bf16": "openvino-cpu",
             "onnx-int8": "onnx-cpu", "onnx-fp32": "onnx-cpu", "gguf-q8_0": "llamacpp"}


def start_to_first_answer(bundle_dir: Path, runtime: str, artifact: str, threads: int) -> float:
    import grpc

    from embedrpc.v1 import embedding_pb2 as pb
    from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(serve_command(bundle_dir, port, artifact, threads, "--runtime",
                                             runtime), stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=PROMPT_RECONNECT)
    try:
        return first_answer(pb_grpc.EmbeddingServiceStub(channel), pb, process, started)
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    _, bundle_dir = assets.bundle()
    lines = ["| artifact | runtime | first answer s, median (slowest) | goal ≤ 2 s |",
             "|---|---|--:|---|"]
    for artifact, runtime in ARTIFACTS.items():
        print(f"[bench] {artifact}: a first start (caches), then {args.starts}", file=sys.stderr)
        start_to_first_answer(bundle_dir, runtime, artifact, args.threads)
        times = [start_to_first_answer(bundle_dir, runtime, artifact, args.threads)
                 for _ in range(args.starts)]
        median = statistics.median(times)
        lines.append(f"| {artifact} | {runtime} | {median:.2f} ({max(times):.2f}) | "
                     f"{'met' if max(times) <= 2 else 'missed'} |")
    host, cpu = report.machine(), hostinfo.cpu()
    text = "\n".join([
        f"# Cold start on {host['cpu']} ({datetime.date.today()})", "", *lines, "",
        f"`embedrpc serve` of the 0.6B-shape bundle from process start to the first answer "
        f"of a one-word request over gRPC, {args.threads} threads, after one uncounted start "
        f"that cached the self-check's verdict, the checksums and OpenVINO's compiled model. "
        f"The client reconnects every 10–50 ms (gRPC's default backoff after a refused "
        f"connection is a second, which earlier cold-start figures included). This host: "
        f"{cpu.label}.", ""])
    report.write_focused(args.out, "cold-start", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
