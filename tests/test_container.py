"""The `cpu` image, built and run for real: it starts non-root with the bundle mounted
read-only, its HEALTHCHECK turns healthy, Embed and EmbedStream answer through the published
port with sentence-transformers' vectors, torch is absent, and `docker stop` drains in-flight
work and exits 0. A Docker engine is started when none answers; where none can be had, the
test fails saying why (it is never skipped)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedrpc.service.bundle.formats import BARS
from embedrpc.service.config import cache_dir
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

from conftest import PERSISTENT_CACHE, cached_checkpoint, exported_bundle
from server_support import vectors_of

pytestmark = pytest.mark.heavy

ROOT = Path(__file__).resolve().parents[1]
TAG = "embedrpc:cpu-test"
TEXTS = ["what is a vector database?", "Paris is the capital of France.", "深度学习"]


def docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The cpu image, built by scripts/container.sh (the host's llama-cpp-python wheel reused,
    so the test image builds in about a minute; release images build every CPU variant)."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is missing: scripts/install.sh installs docker.io")
    wheels = sorted((PERSISTENT_CACHE / "wheels").glob("llama_cpp_python-*.whl")) or \
        sorted((cache_dir() / "wheels").glob("llama_cpp_python-*.whl"))
    command = ["bash", str(ROOT / "scripts/container.sh"), "--tag", TAG, "--llama-cpu", "native",
               *(["--prebuilt-llama", str(wheels[-1])] if wheels else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        pytest.fail(f"the image could not be built: {done.stderr[-3000:]}", pytrace=False)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", TAG).stdout)
    print(f"image {TAG}: {size / 1e6:.0f} MB")
    return TAG


@pytest.fixture(scope="module")
def mounted_bundle(tmp_path_factory, qwen3_tokenizer_json) -> Path:
    """A copy of the tiny bundle that the container's user (uid 10001) can read."""
    source = exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))
    target = tmp_path_factory.mktemp("mounted") / "bundle"
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for parent in target.parents:
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    return target


@contextlib.contextmanager
def running(image, bundle, *serve_args):
    """A container of `image` serving `bundle` (read-only) as uid 10001; yields (name, target)."""
    name = f"embedrpc-test-{time.monotonic_ns()}"
    docker("run", "-d", "--name", name, "--user", "10001", "-v", f"{bundle}:/bundle:ro",
           "-p", "127.0.0.1::50051", "--health-interval", "2s", "--health-start-period", "120s",
           image, *serve_args)
    try:
        port = docker("port", name, "50051/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        yield name, f"127.0.0.1:{port}"
    finally:
        logs = docker("logs", name, check=False)
        print(logs.stdout[-2000:], logs.stderr[-4000:])
        docker("rm", "-f", name, check=False)


@pytest.fixture()
def container(image, mounted_bundle):
    with running(image, mounted_bundle) as started:
        yield started


def health(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()


def batches_done(name: str) -> float:
    """Batches the server in the container has run (its metrics, read from inside)."""
    page = docker("exec", name, "python", "-c", "import urllib.request; print(urllib.request."
                  "urlopen('http://127.0.0.1:9090/metrics', timeout=5).read().decode())").stdout
    found = re.search(r"^embedrpc_batch_inputs_count (\S+)", page, re.M)
    return float(found.group(1)) if found else 0.0


def outcome(call) -> str:
    """What a finished call ended with, for a failure message."""
    error = call.exception()
    return "OK" if error is None else f"{error.code().name}: {error.details()}"


def wait_healthy(name: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while (status := health(name)) != "healthy":
        assert status in ("starting", ""), f"container is {status}"
        assert time.monotonic() < deadline, "the container never turned healthy"
        time.sleep(1)


def test_the_image_serves_the_bundle_as_sentence_transformers_does(container):
    name, target = container
    wait_healthy(name)
    assert docker("inspect", "-f", "{{.Config.User}}", name).stdout.strip() == "10001"
    stub = pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(target))
    info = stub.GetInfo(pb.GetInfoRequest(), timeout=30)
    expected = SentenceTransformer(str(cached_checkpoint("tiny", True)),
                                   device="cpu").encode(TEXTS, prompt_name="query")
    got = vectors_of(stub.Embed(pb.EmbedRequest(inputs=TEXTS, task=pb.TASK_QUERY), timeout=60))
    bar = BARS[info.artifact]
    cosines = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) \
        / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= bar, (info.artifact, cosines)
    requests = [pb.EmbedRequest(id=f"s{i}", inputs=[TEXTS[i % 3]], task=pb.TASK_QUERY)
                for i in range(12)]
    streamed = list(stub.EmbedStream(iter(requests), timeout=60))
    assert [r.id for r in streamed] == [r.id for r in requests]
    torch = docker("exec", name, "python", "-c", "import torch", check=False)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    writable = docker("exec", name, "sh", "-c", "touch /bundle/x", check=False)
    assert writable.returncode != 0  # the bundle is mounted read-only


def test_docker_stop_drains_in_flight_work_and_exits_0(image, mounted_bundle):
    """One text per decode, so 600 texts take seconds: `docker stop` lands mid-request. The
    grace is generous: on a loaded machine the request may take minutes, and must still end."""
    with running(image, mounted_bundle, "--runtime", "llamacpp", "--artifact", "gguf-f16",
                 "--batch-invariant", "--grace-seconds", "600") as (name, target):
        wait_healthy(name)
        stub = pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(target))
        texts = [f"document {i} " + "about retrieval and ranking " * 12 for i in range(600)]
        in_flight = stub.Embed.future(pb.EmbedRequest(inputs=texts), timeout=900)
        deadline = time.monotonic() + 60
        while batches_done(name) < 1:  # the request is being computed
            assert time.monotonic() < deadline, "no batch ran"
            time.sleep(0.05)
        assert not in_flight.done(), f"the request ended before the stop: {outcome(in_flight)}"
        stopping = time.monotonic()
        stopped = docker("stop", "-t", "660", name, timeout=900)
        took = time.monotonic() - stopping
        assert stopped.returncode == 0, stopped.stderr
        assert in_flight.exception() is None, f"{outcome(in_flight)} ({took:.1f} s into the stop)"
        assert len(in_flight.result().embeddings) == 600
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        assert state["ExitCode"] == 0 and not state["OOMKilled"]


def test_a_server_crash_ends_the_container(image, mounted_bundle):
    """tini is PID 1: the server is its child, so a fatal signal ends the server and the
    container with it (a PID 1 ignores a signal it does not handle: the container would stay
    up, unhealthy, instead of being restarted)."""
    with running(image, mounted_bundle, "--runtime", "onnx-cpu") as (name, _target):
        wait_healthy(name)
        server = docker("exec", name, "cat", "/proc/1/task/1/children").stdout.split()
        assert len(server) == 1, server
        command = docker("exec", name, "cat", f"/proc/{server[0]}/cmdline").stdout
        assert "embedrpc" in command and "serve" in command
        docker("exec", name, "sh", "-c", f"kill -SEGV {server[0]}")  # the shell's kill
        deadline = time.monotonic() + 60
        while docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true":
            assert time.monotonic() < deadline, "the container outlived its server"
            time.sleep(0.5)
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        assert state["ExitCode"] == 128 + 11  # tini reports the child's signal
