"""Each engine measured on the same texts: embedrpc's runtimes called in-process (raw) and
served over gRPC, and the peers a user would pick instead."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.workload import Text
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.isolation import signal_name
from embedrpc.service.runtimes.registry import open_runtime


@dataclass
class Result:
    engine: str
    mode: str  # "raw", "served", "peer"
    tokens: int = 0
    seconds: float = 0.0
    texts: int = 0
    latency_ms: dict = field(default_factory=dict)  # p50/p95/p99 of single short queries
    peak_rss_mb: float | None = None  # the server and its inference worker together
    cold_start_s: float | None = None
    note: str = ""
    worker_rss_mb: float | None = None  # the process that holds the model
    artifact_mb: float | None = None  # the served artifact's files
    min_cosine: float | None = None  # against embedrpc onnx-fp32 on the same texts

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0


def percentiles(samples_s: list[float]) -> dict:
    values = np.array(samples_s) * 1000
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}


def saturate(send, items: list, clients: int) -> float:
    """Seconds for `clients` threads to `send` every item, one at a time each."""
    pending = list(items)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop()
            send(item)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    [w.start() for w in workers]
    [w.join() for w in workers]
    return time.perf_counter() - began


def latencies(send, queries: list) -> dict:
    """Percentiles of sending each query alone, one after another."""
    samples = []
    for query in queries:
        sent = time.perf_counter()
        send(query)
        samples.append(time.perf_counter() - sent)
    return percentiles(samples)


def raw(bundle, artifact: str, sequences: list[list[int]], queries: list[list[int]],
        threads: int, max_batch_tokens: int, reference: np.ndarray | None = None) -> Result:
    """The runtime called directly, batched by the same token budget as the server;
    `reference`: onnx-fp32 vectors of `sequences`, for its fidelity."""
    runtime = open_runtime(bundle, artifact, options_for(bundle,
        threads=threads, max_batch_tokens=max_batch_tokens,
        max_input_tokens=max(map(len, sequences))))
    try:
        runtime.embed(sequences[:2])  # warm-up
        started = time.perf_counter()
        vectors = runtime.embed(sequences)
        elapsed = time.perf_counter() - started
        latency = latencies(lambda query: runtime.embed_batch([query]), queries)
    finally:
        runtime.close()
    return Result(f"embedrpc {runtime.name} {artifact}", "raw", sum(map(len, sequences)),
                  elapsed, len(sequences), latency, artifact_mb=bundle.manifest.artifact(
                      artifact).bytes / 2**20,
                  min_cosine=None if reference is None else agreement(vectors, reference),
                  note=f"precision {runtime.precision}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(bundle_dir, port: int, artifact: str, threads: int, *flags: str,
                  metrics_port: int = 0) -> list[str]:
    """`embedrpc serve` of one artifact on 127.0.0.1:`port` (metrics off by default)."""
    return [sys.executable, "-m", "embedrpc.service.cli", "serve", str(bundle_dir), "--host",
            "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port), "--artifact",
            artifact, "--threads", str(threads), *flags]


@contextlib.contextmanager
def serving(bundle_dir, artifact: str, threads: int, *flags: str, metrics_port: int = 0):
    """A fresh `embedrpc serve` of one artifact, ready and warmed: yields (process, stub);
    SIGTERM on the way out."""
    import grpc

    from embedrpc.v1 import embedding_pb2 as pb
    from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

    process = subprocess.Popen(
        serve_command(bundle_dir, port := free_port(), artifact, threads, *flags,
                      metrics_port=metrics_port), stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.EmbeddingServiceStub(channel)
    try:
        grpc.channel_ready_future(channel).result(timeout=1800)
        stub.Embed(pb.EmbedRequest(inputs=["warm-up, not in the workload"]), timeout=1800)
        yield process, stub
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _peak_rss_mb(pid: int) -> float | None:
    """Peak RSS (VmHWM) of the server and its children (the inference worker holds the model)."""
    peaks = [vm_hwm_kb(process) for process in (pid, *_children(pid))]
    known = [peak for peak in peaks if peak is not None]
    return sum(known) / 1024 if known else None


def _children_rss_mb(pid: int) -> float | None:
    known = [peak for peak in map(vm_hwm_kb, _children(pid)) if peak is not None]
    return sum(known) / 1024 if known else None


def vm_hwm_kb(pid: int) -> int | None:
    """A process's peak RSS (VmHWM) in KiB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


GRPC, HTTP_BASE64, HTTP_FLOAT = "gRPC", "HTTP base64", "HTTP float"


def served(bundle_dir, runtime: str, artifact: str, texts: list[Text], queries: list[str],
           tokens: int, threads: int, max_batch_tokens: int, clients: int,
           protocol: str = GRPC) -> Result:
    """`embedrpc serve` in its own process; `clients` threads each send one text per request
    (queries with the query task, documents with the document task), over gRPC or over the
    HTTP front's OpenAI route (`encoding_format` base64, as the OpenAI SDKs send, or float)."""
    import grpc

    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.bundle.checksums import FileHashes
    from embedrpc.service.config import ServerConfig, cache_dir
    from embedrpc.service.server import choose_runtime, serving_limits
    from embedrpc.v1 import embedding_pb2 as pb
    from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

    port, http_port = free_port(), free_port()
    command = serve_command(bundle_dir, port, artifact, threads, "--runtime", runtime,
                            "--max-batch-tokens", str(max_batch_tokens),
                            "--max-input-tokens", str(max_batch_tokens),
                            "--cache-bytes", "0")  # the engine's own speed (cache.py: the cache's)
    if protocol != GRPC:
        command += ["--http-port", str(http_port)]
    # The server's self-check, run (and cached) first: the cold start below is a restart's.
    config = ServerConfig(str(bundle_dir), runtime=runtime, artifact=artifact, threads=threads,
                          max_batch_tokens=max_batch_tokens, max_input_tokens=max_batch_tokens)
    bundle = Bundle(bundle_dir, hashes=FileHashes(cache_dir(config.cache)))
    checked = time.perf_counter()
    verdict = choose_runtime(config, bundle, serving_limits(config, bundle.manifest))
    bundle.verify([artifact])  # checksums remembered, as after any earlier start
    self_check = "self-check cached from an earlier run" if "[cached]" in verdict.reason \
        else f"self-check {time.perf_counter() - checked:.0f} s"
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=PROMPT_RECONNECT)
    stub = pb_grpc.EmbeddingServiceStub(channel)
    task = {"query": pb.TASK_QUERY}
    try:
        cold_start = first_answer(stub, pb, process, started)
        if protocol == GRPC:
            def send(text, kind):
                stub.Embed(pb.EmbedRequest(inputs=[text], task=task.get(kind, pb.TASK_DOCUMENT)),
                           timeout=600)
        else:
            send = _openai_sender(http_port, stub.GetInfo(pb.GetInfoRequest()).model,
                                  "base64" if protocol == HTTP_BASE64 else "float", clients)
        send(texts[0].text, texts[0].kind)  # warm-up
        elapsed = saturate(lambda text: send(text.text, text.kind), texts, clients)
        latency = latencies(lambda query: send(query, "query"), queries)
        rss, worker_rss = _peak_rss_mb(process.pid), _children_rss_mb(process.pid)
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    name = f"embedrpc {runtime} {artifact}" + ("" if protocol == GRPC else f" {protocol}")
    return Result(name, "served", tokens, elapsed, len(texts),
                  latency, rss, cold_start, f"{clients} concurrent clients over {protocol}; "
                  f"{self_check} (the cold start is a restart's: verdict and checksums cached)",
                  worker_rss_mb=worker_rss,
                  artifact_mb=bundle.manifest.artifact(artifact).bytes / 2**20)


def auto_pick(bundle_dir, threads: int, max_batch_tokens: int) -> str:
    """What `embedrpc serve --runtime auto` chooses on this host (its self-check, verdicts
    cached), as "runtime artifact"."""
    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.config import ServerConfig
    from embedrpc.service.server import choose_runtime, serving_limits

    config = ServerConfig(str(bundle_dir), threads=threads, max_batch_tokens=max_batch_tokens,
                          max_input_tokens=max_batch_tokens)
    bundle = Bundle(bundle_dir)
    choice = choose_runtime(config, bundle, serving_limits(config, bundle.manifest))
    return f"{choice.runtime} {choice.artifact}"


def _openai_sender(port: int, model: str, encoding: str, clients: int):
    """POST /v1/embeddings with one text, decoding the answer as the OpenAI SDK does."""
    import base64

    import httpx
    import orjson

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                          limits=httpx.Limits(max_connections=clients))

    def send(text: str, kind: str) -> np.ndarray:
        response = client.post("/v1/embeddings", content=orjson.dumps({
            "model": model, "input": [text], "encoding_format": encoding,
            "input_type": "query" if kind == "query" else "document"}),
            headers={"content-type": "application/json"})
        response.raise_for_status()
        embedding = orjson.loads(response.content)["data"][0]["embedding"]
        return np.frombuffer(base64.b64decode(embedding), "<f4") if encoding == "base64" \
            else np.asarray(embedding, np.float32)

    return send


# A client polling a server that is not listening yet: gRPC's default waits a second (and
# more) before reconnecting after a refused connection, which a cold start would then include.
PROMPT_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 10),
                    ("grpc.min_reconnect_backoff_ms", 10), ("grpc.max_reconnect_backoff_ms", 50)]


def first_answer(stub, pb, process, started: float) -> float:
    import grpc

    while True:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            stub.Embed(pb.EmbedRequest(inputs=["warm"]), timeout=5)
            return time.perf_counter() - started
        except grpc.RpcError:
            time.sleep(0.01)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Minimum cosine between rows of `vectors` and `reference` (the first rows of each)."""
    from embedrpc.service.bundle.parity import compare

    count = min(len(vectors), len(reference))
    return compare(vectors[:count], reference[:count])[0]


def sentence_transformers(checkpoint, prompted: list[str], queries: list[str], tokens: int,
                          threads: int, dtype: str, reference: np.ndarray) -> Result:
    """`prompted`: the workload's texts with their prompts already in front; `dtype`: "fp32"
    or "bf16" (torch autocasts nothing: the model's weights are cast)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads or os.cpu_count())
    model = SentenceTransformer(str(checkpoint), device="cpu", model_kwargs={
        "torch_dtype": torch.bfloat16 if dtype == "bf16" else torch.float32})
    model.max_seq_length = max(model.max_seq_length, 1024)
    model.encode(prompted[:2], prompt="")
    started = time.perf_counter()
    vectors = model.encode(prompted, prompt="", batch_size=32, convert_to_numpy=False)
    elapsed = time.perf_counter() - started
    vectors = np.vstack([v.float().numpy() for v in vectors])
    latency = latencies(lambda query: model.encode([query], prompt_name="query"), queries)
    return Result(f"sentence-transformers torch {dtype}", "peer", tokens, elapsed,
                  len(prompted), latency, note=f"batch_size=32, torch {torch.__version__}",
                  min_cosine=agreement(vectors, reference))


def isolated(function, *args):
    """`function(*args)` in a child process, so that a peer whose native library faults costs
    its own row and not the whole run. A crash or an exception becomes a RuntimeError."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_answer, args=(sender, function, args), daemon=True)
    child.start()
    sender.close()
    try:
        succeeded, value = receiver.recv()
    except EOFError:
        child.join()
        code = child.exitcode
        how = signal_name(-code) if code is not None and code < 0 else f"exit {code}"
        raise RuntimeError(f"crashed ({how})") from None
    child.join()
    if not succeeded:
        raise RuntimeError(value)
    return value


def _answer(sender, function, args) -> None:
    try:
        outcome = (True, function(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent as text
        outcome = (False, f"{type(exc).__name__}: {exc}")
    sender.send(outcome)
    sender.close()


def llama_cpp_embed_defaults(gguf_path, prompted: list[str], queries: list[str],
                             tokens: int, reference: np.ndarray) -> Result:
    """llama-cpp-python's own `Llama.embed()` with its defaults (it truncates to n_batch)."""
    from llama_cpp import Llama

    model = Llama(model_path=str(gguf_path), embedding=True, verbose=False)
    inputs = prompted
    truncated = sum(1 for text in inputs
                    if len(model.tokenize(text.encode(), add_bos=True)) > model.n_batch)
    model.embed(inputs[:2])
    started = time.perf_counter()
    vectors = np.array(model.embed(inputs), dtype=np.float32)
    elapsed = time.perf_counter() - started
    latency = latencies(lambda query: model.embed(["Query: " + query]), queries)
    note = f"defaults: n_ctx={model.n_ctx()}, n_batch={model.n_batch}"
    if truncated:
        note += f"; silently truncated {truncated} texts to n_batch tokens"
    return Result("llama-cpp-python Llama.embed() q8_0", "peer", tokens, elapsed, len(prompted),
                  latency, note=note, min_cosine=agreement(vectors, reference))


def infinity(executable, checkpoint, prompted: list[str], queries: list[str], tokens: int,
             clients: int, reference: np.ndarray) -> Result:
    """Infinity (`infinity_emb v2`, torch engine on CPU) over its OpenAI-style HTTP API.

    `reference`: embedrpc onnx-fp32 vectors of `prompted[:len(reference)]`, to check that
    Infinity embeds the same texts the same way (no extra prompt, last-token pooling)."""
    import json
    import urllib.request

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([str(executable), "v2", "--model-id", str(checkpoint), "--engine",
                                "torch", "--device", "cpu", "--port", str(port),
                                "--batch-size", "32"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def post(inputs: list[str]) -> np.ndarray:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/embeddings", method="POST",
            data=json.dumps({"model": str(checkpoint), "input": inputs}).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            body = json.loads(response.read())
        return np.array([item["embedding"] for item in body["data"]], dtype=np.float32)

    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("infinity_emb exited during start-up")
            try:
                post(["warm"])
                break
            except OSError:
                time.sleep(0.5)
        cold_start = time.perf_counter() - started
        fidelity = agreement(post(prompted[:len(reference)]), reference)
        elapsed = saturate(lambda text: post([text]), prompted, clients)
        latency = latencies(lambda query: post(["Query: " + query]), queries)
        rss = _peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    return Result("Infinity (infinity-emb, torch CPU)", "peer", tokens, elapsed, len(prompted),
                  latency, rss, cold_start, f"{clients} concurrent HTTP clients",
                  min_cosine=fidelity)


EMBROIDER_RUN = """
import json, sys, time
import embroider
onnx, tokenizer, texts_file = sys.argv[1:4]
items = json.load(open(texts_file))
started = time.perf_counter()
model = embroider.JinaV5.open_files(onnx, tokenizer, truncate_dim=1024, device="cpu",
                                    max_length=8192)
opened = time.perf_counter() - started
model.encode_batch([items["texts"][0][1]], task="Document")
vectors, began = [], time.perf_counter()
for kind, text in items["texts"]:
    vectors.append(list(model.encode_batch([text], task=kind)[0]))
elapsed = time.perf_counter() - began
latency = []
for query in items["queries"]:
    sent = time.perf_counter()
    model.encode_batch([query], task="Query")
    latency.append(time.perf_counter() - sent)
rss = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": elapsed, "vectors": vectors, "latency": latency,
                  "open_s": opened, "rss_kb": int(rss), "version": embroider.__version__
                  if hasattr(embroider, "__version__") else "?"}))
"""


def embroider(python, onnx_path, tokenizer_path, texts: list[Text], queries: list[str],
              tokens: int, reference: np.ndarray) -> Result:
    """embroider (PyPI; Rust + onnxruntime, Jina v5 semantics) in its own environment, on the
    unpooled fp32 graph: one text per forward, its own prompts ("Query: "/"Document: ")."""
    import json
    import tempfile

    import onnxruntime

    library = next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    with tempfile.NamedTemporaryFile("w", suffix=".json") as items:
        json.dump({"texts": [["Query" if t.kind == "query" else "Document", t.text]
                             for t in texts], "queries": queries}, items)
        items.flush()
        done = subprocess.run([str(python), "-c", EMBROIDER_RUN, str(onnx_path),
                               str(tokenizer_path), items.name], capture_output=True, text=True,
                              env={**os.environ, "ORT_DYLIB_PATH": str(library)}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"embroider failed: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    vectors = np.array(out["vectors"], dtype=np.float32)
    return Result("embroider (Rust + onnxruntime) fp32", "peer", tokens, out["seconds"],
                  len(texts), percentiles(out["latency"]), out["rss_kb"] / 1024,
                  note=f"one text per forward, CPU arena off, session open "
                       f"{out['open_s']:.1f} s; onnxruntime {onnxruntime.__version__} via "
                       f"ORT_DYLIB_PATH", min_cosine=agreement(vectors, reference))


ST_BACKENDS = {"openvino": "sentence-transformers OpenVINO backend (its defaults)",
               "openvino-static-int8": "sentence-transformers OpenVINO backend, static int8 "
                                       "(NNCF, calibrated on embedrpc's calibration corpus)",
               "onnx-int8": "sentence-transformers ONNX backend, dynamic int8 (avx512_vnni)"}


def calibration_sentences(prompts: dict[str, str]) -> list[str]:
    """The corpus embedrpc's own int8 exports calibrate on, with each of the bundle's prompts
    in turn: the same calibration for the peer's static int8."""
    from embedrpc.export.calibration import calibration_texts

    ordered = [prompts[name] for name in sorted(prompts)]
    return [ordered[i % len(ordered)] + text for i, text in enumerate(calibration_texts())]


def sentence_transformers_backend(python, backend: str, checkpoint, prompted: list[str],
                                  queries: list[str], tokens: int,
                                  reference: np.ndarray, calibration: list[str]) -> Result:
    """sentence-transformers' ONNX or OpenVINO backend, in its own environment (its optimum
    tooling pins an older transformers): benchmarks/st_backends_run.py."""
    import json
    import tempfile

    script = Path(__file__).with_name("st_backends_run.py")
    with tempfile.TemporaryDirectory() as work:
        texts = Path(work) / "texts.json"
        texts.write_text(json.dumps({"prompted": prompted, "queries": queries,
                                     "calibration": calibration}))
        done = subprocess.run([str(python), str(script), str(checkpoint), work, str(texts),
                               backend], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{backend}: {done.stderr.strip()[-800:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    vectors = np.array(out["vectors"], dtype=np.float32)
    return Result(ST_BACKENDS[backend], "peer", tokens, out["seconds"], len(prompted),
                  percentiles(out["latency"]), out["rss_kb"] / 1024,
                  note=f"batch_size=32, sentence-transformers {out['version']}; export and "
                       f"load {out['prepare_s']:.0f} s", min_cosine=agreement(vectors, reference))
