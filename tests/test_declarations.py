"""One declaration per runtime and per format: a runtime's name, tier, formats, libraries and
settings live in its own module (service/runtimes/), a format's name, place and parity bar in
service/bundle/formats.py, and nothing else in the program spells them. Adding a runtime is one
file and one registry line."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from embedrpc.service.bundle import formats
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.cli import build_parser
from embedrpc.service.config import from_arguments
from embedrpc.service.runtimes import hostinfo, registry
from embedrpc.service.runtimes.interface import options_for
from embedrpc.service.runtimes.measure import ParityResult, failure_line
from embedrpc.service.runtimes.selection import Choice, Host, plan
from embedrpc.service.runtimes.selfcheck import SelfCheck, VerdictCache
from embedrpc.v1 import embedding_pb2 as pb

import extra_runtime
from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer, vectors_of

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = sorted([*ROOT.glob("service/**/*.py"), *ROOT.glob("export/**/*.py")])


def _module_file(spec) -> Path:
    """The module whose globals hold `spec`: where the runtime is declared."""
    for module in (registry.onnx_runtime, registry.openvino_runtime, registry.llamacpp_runtime):
        if any(value is spec for value in vars(module).values()):
            return Path(module.__file__).resolve()
    raise AssertionError(f"no runtime module declares {spec.name}")


def _strings(path: Path):
    """Every string constant of a module but its docstrings (prose may name things)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


def _spelled(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def test_runtime_and_format_names_are_spelled_only_where_declared():
    declared_in = {spec.name: _module_file(spec) for spec in registry.SPECS}
    formats_file = Path(formats.__file__).resolve()
    declared_in.update({name: formats_file for name in formats.FORMATS})
    assert len(PROGRAM) > 40
    elsewhere = [f"{path.relative_to(ROOT)}:{line}: {name!r} in {text!r}"
                 for path in PROGRAM for line, text in _strings(path)
                 for name, home in declared_in.items()
                 if path.resolve() != home and _spelled(name, text)]
    assert elsewhere == []


def test_the_check_finds_a_name_spelled_elsewhere(tmp_path):
    """The scan above is not vacuous: a kind name in a string outside its module is found."""
    stray = tmp_path / "stray.py"
    stray.write_text('"""Prose may say onnx-cpu."""\nKIND = "onnx-cpu"\nOTHER = f"{1} gguf-q8_0"\n')
    found = [text for _, text in _strings(stray)
             if any(_spelled(n, text) for n in ("onnx-cpu", "gguf-q8_0"))]
    assert found == ["onnx-cpu", " gguf-q8_0"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def test_the_self_check_key_holds_every_runtimes_library_versions(bundle, monkeypatch, tmp_path):
    """A verdict about OpenVINO does not survive an OpenVINO upgrade."""
    libraries = hostinfo.fingerprint(registry.libraries())["libraries"]
    assert libraries["openvino"] == importlib.metadata.version("openvino")
    assert libraries["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert libraries["llama_cpp_python"] == importlib.metadata.version("llama_cpp_python")

    opened = Bundle(bundle)
    check = SelfCheck(opened, options_for(opened), VerdictCache(tmp_path))
    candidate = plan(opened.manifest, "openvino-cpu").tiers[0][0][0]
    before = check._context(candidate)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "9999.0" if name == "openvino" else real(name))
    after = check._context(candidate)
    assert before["host"]["libraries"]["openvino"] != after["host"]["libraries"]["openvino"]
    assert {k: v for k, v in before.items() if k != "host"} == \
        {k: v for k, v in after.items() if k != "host"}


@pytest.fixture()
def registered(monkeypatch):
    """The one registry line a new runtime needs."""
    monkeypatch.setattr(registry, "SPECS", [*registry.SPECS, extra_runtime.SPEC])
    return extra_runtime.SPEC


def test_a_new_runtime_is_one_file_and_one_registry_line(registered, bundle):
    # The command line offers it and its own setting.
    args = build_parser().parse_args(["serve", str(bundle), "--runtime", registered.name,
                                      "--reference-note", "loud"])
    config = from_arguments(args)
    assert config.runtime == registered.name
    assert config.runtime_settings["reference_note"] == "loud"
    # Auto-selection plans it among the CPU runtimes, with its artifact.
    manifest = Bundle(bundle).manifest
    host = Host({name: (True, "usable") for name in registry.kinds()})
    tiers = [[str(c) for family in tier for c in family] for tier in plan(manifest,
                                                                           host=host).tiers]
    assert f"{registered.name} onnx-fp32" in tiers[-1]
    # Its library keys the self-check; failures name its engine.
    assert "onnxruntime" in registry.libraries()
    line = failure_line(Bundle(bundle), ParityResult("onnx-fp32", None, failure="crashed (x)"),
                        "checking", registered.name)
    assert line.startswith("onnx-fp32: onnxruntime (reference) crashed (x)")
    # It serves, with its setting, and its vectors are onnx-fp32's.
    server = LoopbackServer(bundle, choice=Choice(registered.name, "onnx-fp32", "test"),
                            in_process=True, reference_note="loud")
    reference = LoopbackServer(bundle, choice=Choice("onnx-cpu", "onnx-fp32", "test"),
                               in_process=True)
    try:
        assert server.runtime.name == registered.name and server.runtime.note == "loud"
        request = pb.EmbedRequest(inputs=["one file, one line", "x"])
        info = server.stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        assert info.runtime == registered.name
        np.testing.assert_array_equal(vectors_of(server.stub.Embed(request, timeout=30)),
                                      vectors_of(reference.stub.Embed(request, timeout=30)))
    finally:
        server.stop()
        reference.stop()
