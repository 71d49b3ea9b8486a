"""linux/arm64: how embedrpc names an Arm host and what it keeps on for llama.cpp there, and the
cheap part of the emulated check (fixtures/arm64_check.py is the release's full one): the arm64
image builds from the Dockerfile and onnxruntime serves the tiny bundle in it under qemu-user,
a gRPC client outside getting oracle-faithful vectors and an ordered stream. The emulated CPU is
a Neoverse N1 (arm64_check.CPU_MODEL): on qemu's default CPU, whose SME selects onnxruntime's
KleidiAI SME kernels, onnxruntime's int8 answers are wrong under qemu 7.2 (its report says
more)."""

from __future__ import annotations

import subprocess

import pytest

from embedrpc.service.bundle.formats import BARS
from embedrpc.service.runtimes import hostinfo, llamacpp_runtime
from fixtures import arm64_check

from conftest import PERSISTENT_CACHE, cached_checkpoint, exported_bundle

ROOT = arm64_check.ROOT


def test_an_arm_host_is_named_by_its_hwcaps(monkeypatch):
    monkeypatch.setattr(hostinfo, "_hwcaps", lambda: ["fp", "asimd", "asimddp", "i8mm"])
    real = hostinfo._arm64_cpu({"CPU implementer": "0x41", "CPU part": "0xd0c",
                                "Features": "fp asimd"})
    assert real.model == "aarch64 CPU implementer 0x41 part 0xd0c"
    assert {"asimddp", "i8mm"} <= real.flags
    emulated = hostinfo._arm64_cpu({"model name": "Intel(R) Xeon(R) Processor"})
    assert emulated.model == ("aarch64 under emulation (/proc/cpuinfo shows the host: "
                              "Intel(R) Xeon(R) Processor)")


def test_llama_cpp_keeps_its_repacked_kernels_off_x86_only(monkeypatch):
    for machine, extra in (("aarch64", True), ("arm64", True), ("x86_64", False),
                           ("AMD64", False)):
        monkeypatch.setattr(llamacpp_runtime.platform, "machine", lambda m=machine: m)
        assert llamacpp_runtime.uses_extra_buffers() is extra, machine


@pytest.fixture(scope="module")
def arm64_image() -> str:
    """The arm64 image (scripts/container.sh --platform linux/arm64): an arm64 debootstrap
    base and llama.cpp cross-compiled here, both cached across runs."""
    wheel = subprocess.run(["bash", str(ROOT / "scripts/llama_wheel_arm64.sh"),
                            str(PERSISTENT_CACHE / "wheels-arm64")], capture_output=True,
                           text=True, timeout=3600)
    if wheel.returncode != 0:
        pytest.fail(f"llama.cpp could not be cross-compiled: {wheel.stderr[-3000:]}",
                    pytrace=False)
    built = subprocess.run(["bash", str(ROOT / "scripts/container.sh"), "--platform",
                            arm64_check.PLATFORM, "--tag", arm64_check.TAG, "--prebuilt-llama",
                            wheel.stdout.strip()], capture_output=True, text=True, timeout=3600)
    if built.returncode != 0:
        pytest.fail(f"the arm64 image could not be built: {built.stderr[-3000:]}",
                    pytrace=False)
    return arm64_check.TAG


@pytest.mark.heavy
def test_the_arm64_image_serves_with_onnxruntime(arm64_image, tmp_path_factory,
                                                 qwen3_tokenizer_json, tmp_path):
    architecture = arm64_check.docker("image", "inspect", "-f", "{{.Architecture}}",
                                      arm64_image).stdout.strip()
    assert architecture == "arm64"
    checkpoint = cached_checkpoint("tiny", True)
    bundle = tmp_path_factory.mktemp("arm64") / "bundle"
    subprocess.run(["cp", "-r", str(exported_bundle(tmp_path_factory, checkpoint,
                                                    formats="onnx-int8")), str(bundle)],
                   check=True)
    for path in [bundle, *bundle.rglob("*")]:  # readable by the image's user (uid 10001)
        path.chmod(0o755 if path.is_dir() else 0o644)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(arm64_check.ARM_CPUINFO)
    cpuinfo.chmod(0o644)
    from sentence_transformers import SentenceTransformer

    oracle = SentenceTransformer(str(checkpoint), device="cpu").encode(arm64_check.TEXTS,
                                                                       prompt_name="query")
    with arm64_check.serving(bundle, "--runtime", "onnx-cpu", cpuinfo=cpuinfo,
                             cpu=arm64_check.CPU_MODEL) as (name, target):
        arm64_check.wait_serving(target, name, timeout=1200)
        info, cosine = arm64_check.client_check(target, oracle)
        logged = arm64_check.docker("logs", name)
        logs = logged.stdout + logged.stderr
    assert (info["runtime"], info["artifact"]) == ("onnx-cpu", "onnx-int8")
    assert cosine >= BARS["onnx-int8"]
    assert "self-check of onnx-cpu onnx-int8 on aarch64 CPU implementer 0x41" in logs
