"""The runtime selection rule (service/runtimes/selection.py): candidates per host, and the
choice made from their self-check verdicts."""

from __future__ import annotations

import pytest

from embedrpc.service.bundle.manifest import Artifact, Manifest, Source, TokenizerInfo
from embedrpc.service.runtimes.selection import (
    Candidate,
    Host,
    SelectionError,
    Verdict,
    choose,
    plan,
)

ALL = ["onnx-fp32", "onnx-fp16", "onnx-int8", "gguf-f16", "gguf-bf16", "gguf-q8_0",
       "gguf-q4_k_m"]
NO_LLAMA = "llama-cpp-python is not installed"
NO_OPENVINO = "openvino is not installed"


def make_host(cuda: bool, llamacpp: bool, openvino: bool = False) -> Host:
    return Host({"onnx-cuda": (cuda, "a CUDA device is visible" if cuda
                               else "no NVIDIA device is visible"),
                 "onnx-cpu": (True, "onnxruntime is installed"),
                 "openvino-cpu": (openvino, "openvino is installed" if openvino
                                  else NO_OPENVINO),
                 "llamacpp": (llamacpp, "llama-cpp-python is installed" if llamacpp
                              else NO_LLAMA)})


GPU = make_host(cuda=True, llamacpp=True, openvino=True)
CPU_WITH_LLAMA = make_host(cuda=False, llamacpp=True)
CPU_ONLY = make_host(cuda=False, llamacpp=False)
EVERY_CPU = make_host(cuda=False, llamacpp=True, openvino=True)


def manifest(*names: str) -> Manifest:
    return Manifest(Source("m", None, "0" * 64, None), "qwen3", 64, [32, 64], 128,
                    {"query": "Query: ", "document": "Document: "}, "document",
                    TokenizerInfo([], True, 1, 1, "right"),
                    [Artifact(n, n.split("-")[0], n.split("-", 1)[1], "x", []) for n in names])


def names(tiers) -> list[list[list[str]]]:
    return [[[str(c) for c in family] for family in tier] for tier in tiers]


@pytest.mark.parametrize("host,present,expected", [
    (GPU, ALL, [[["onnx-cuda onnx-fp16", "onnx-cuda onnx-fp32"]],
                [["onnx-cpu onnx-int8", "onnx-cpu onnx-fp32", "onnx-cpu onnx-fp16"],
                 ["llamacpp gguf-q8_0", "llamacpp gguf-f16", "llamacpp gguf-bf16",
                  "llamacpp gguf-q4_k_m"]]]),
    (GPU, ["gguf-f16"], [[["llamacpp gguf-f16"]]]),
    (CPU_WITH_LLAMA, ["gguf-q4_k_m", "gguf-bf16", "onnx-int8"],
     [[["onnx-cpu onnx-int8"], ["llamacpp gguf-bf16", "llamacpp gguf-q4_k_m"]]]),
    (CPU_WITH_LLAMA, ["onnx-fp32", "onnx-int8"], [[["onnx-cpu onnx-int8", "onnx-cpu onnx-fp32"]]]),
    (CPU_ONLY, ALL, [[["onnx-cpu onnx-int8", "onnx-cpu onnx-fp32", "onnx-cpu onnx-fp16"]]]),
    (EVERY_CPU, ["openvino-bf16", "gguf-q8_0", "onnx-fp32", "openvino-int8"],
     [[["onnx-cpu onnx-fp32"], ["openvino-cpu openvino-int8", "openvino-cpu openvino-bf16"],
       ["llamacpp gguf-q8_0"]]]),
    (CPU_WITH_LLAMA, ["openvino-int8", "gguf-q8_0"], [[["llamacpp gguf-q8_0"]]]),
])
def test_auto_candidates(host, present, expected):
    chosen = plan(manifest(*present), host=host)
    assert names(chosen.tiers) == expected and not chosen.requested


def test_reasons_say_why():
    assert plan(manifest(*ALL), host=CPU_ONLY).reason == \
        "no usable CUDA (no NVIDIA device is visible); openvino is not installed; " \
        "llama-cpp-python is not installed"
    assert plan(manifest(*ALL), host=GPU).reason == "a CUDA device is visible"


def test_explicit_requests():
    assert names(plan(manifest(*ALL), "onnx-cpu", host=GPU).tiers) == \
        [[["onnx-cpu onnx-int8", "onnx-cpu onnx-fp32", "onnx-cpu onnx-fp16"]]]
    only = plan(manifest(*ALL), artifact="gguf-q4_k_m", host=CPU_WITH_LLAMA)
    assert names(only.tiers) == [[["llamacpp gguf-q4_k_m"]]] and only.requested
    assert names(plan(manifest(*ALL), artifact="onnx-fp16", host=GPU).tiers) == \
        [[["onnx-cuda onnx-fp16"]]]
    assert names(plan(manifest(*ALL), artifact="onnx-fp16", host=CPU_ONLY).tiers) == \
        [[["onnx-cpu onnx-fp16"]]]


@pytest.mark.parametrize("kwargs,host,message", [
    (dict(runtime="onnx-cuda"), CPU_ONLY, "runtime onnx-cuda is not usable here: no NVIDIA device"),
    (dict(runtime="llamacpp"), CPU_ONLY,
     "runtime llamacpp is not usable here: llama-cpp-python is not installed"),
    (dict(runtime="tensorrt"), GPU, "unknown runtime 'tensorrt'"),
    (dict(artifact="gguf-q2_k"), GPU, "the bundle has no artifact 'gguf-q2_k'"),
    (dict(runtime="llamacpp", artifact="onnx-int8"), GPU, "llamacpp cannot run artifact onnx-int8"),
])
def test_errors(kwargs, host, message):
    with pytest.raises(SelectionError, match=message):
        plan(manifest(*ALL), host=host, **kwargs)


def test_bundle_without_runtime_artifacts():
    with pytest.raises(SelectionError, match="no artifact for runtime onnx-cpu"):
        plan(manifest("gguf-f16"), "onnx-cpu", host=CPU_ONLY)
    with pytest.raises(SelectionError, match="no artifact any runtime here can serve"):
        plan(manifest("gguf-f16"), host=CPU_ONLY)


# -- choosing from verdicts ------------------------------------------------------------------
def checker(verdicts: dict[str, tuple]):
    """A check that answers from a table: 'runtime artifact' -> (passed, failure, tokens/s)."""
    asked = []

    def check(candidate: Candidate) -> Verdict:
        asked.append(str(candidate))
        passed, failure, speed = verdicts[str(candidate)]
        return Verdict(candidate, passed, failure, 0.999 if passed else None, speed)

    check.asked = asked
    return check


def test_fastest_passing_family_wins():
    check = checker({"onnx-cpu onnx-int8": (True, "", 300.0),
                     "llamacpp gguf-q8_0": (True, "", 420.0)})
    choice = choose(plan(manifest(*ALL), host=CPU_WITH_LLAMA), check)
    assert (choice.runtime, choice.artifact) == ("llamacpp", "gguf-q8_0")
    assert choice.reason.endswith("chose llamacpp gguf-q8_0 (the fastest that passed)")
    assert "onnx-cpu onnx-int8: passed self-check (300 tokens/s, min cos 0.99900)" in \
        choice.reason
    assert check.asked == ["onnx-cpu onnx-int8", "llamacpp gguf-q8_0"]  # one per family


def test_a_crashed_candidate_is_skipped_and_named():
    check = checker({"onnx-cpu onnx-int8": (True, "", 300.0),
                     "llamacpp gguf-q8_0": (False, "crashed (SIGSEGV)", None),
                     "llamacpp gguf-f16": (True, "", 100.0)})
    choice = choose(plan(manifest(*ALL), host=CPU_WITH_LLAMA), check)
    assert (choice.runtime, choice.artifact) == ("onnx-cpu", "onnx-int8")
    assert "llamacpp gguf-q8_0: crashed (SIGSEGV) in self-check; llamacpp gguf-f16: passed" in \
        choice.reason
    assert check.asked == ["onnx-cpu onnx-int8", "llamacpp gguf-q8_0", "llamacpp gguf-f16"]


def test_gpu_tier_wins_without_timing_the_cpu():
    check = checker({"onnx-cuda onnx-fp16": (False, "failed (CUDA out of memory)", None),
                     "onnx-cuda onnx-fp32": (True, "", 5000.0)})
    choice = choose(plan(manifest(*ALL), host=GPU), check)
    assert (choice.runtime, choice.artifact) == ("onnx-cuda", "onnx-fp32")
    assert check.asked == ["onnx-cuda onnx-fp16", "onnx-cuda onnx-fp32"]


def test_requested_candidate_that_fails_is_an_error():
    check = checker({"llamacpp gguf-q8_0": (False, "crashed (SIGSEGV)", None)})
    with pytest.raises(SelectionError) as error:
        choose(plan(manifest(*ALL), artifact="gguf-q8_0", host=CPU_WITH_LLAMA), check)
    assert str(error.value) == ("artifact gguf-q8_0 was requested, but it failed its self-check "
                                "on this host: llamacpp gguf-q8_0: crashed (SIGSEGV) in self-check")


def test_nothing_passes():
    check = checker({f"onnx-cpu {n}": (False, "crashed (SIGILL)", None)
                     for n in ("onnx-int8", "onnx-fp32", "onnx-fp16")})
    with pytest.raises(SelectionError, match="^no runtime passed its self-check on this host: "
                                             "onnx-cpu onnx-int8: crashed \\(SIGILL\\)"):
        choose(plan(manifest(*ALL), host=CPU_ONLY), check)
