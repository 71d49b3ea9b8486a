"""A bundle is read, never trusted: every path stays inside it, every value has its type and
range, the artifact opened is the one its name and checksum say, and a runtime that returns
NaN fails its batch instead of answering OK. Each bad bundle is one error line, never a crash."""

from __future__ import annotations

import json
import os
import shutil

import gguf
import grpc
import numpy as np
import pytest

from embedrpc.service import server as server_module
from embedrpc.service.bundle.layout import sha256_file
from embedrpc.service.cli import main
from embedrpc.service.runtimes.selection import Choice
from embedrpc.service.server import EmbedServer
from embedrpc.v1 import embedding_pb2 as pb

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


def copy_with(bundle, tmp_path, edit):
    """A copy of the bundle whose manifest (a dict) `edit(root, manifest)` changes."""
    root = tmp_path / "bundle"
    shutil.copytree(bundle, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest = edit(root, manifest) or manifest
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def artifact(manifest, name) -> dict:
    return next(a for a in manifest["artifacts"] if a["name"] == name)


async def _start_and_stop(config) -> None:
    """`embedrpc serve` that stops as soon as it serves (a bad bundle must never get there)."""
    server = EmbedServer(config)
    await server.start()
    await server.stop(0)


def serve_error(capsys, monkeypatch, root, *flags) -> str:
    monkeypatch.setattr(server_module, "serve", _start_and_stop)
    code = main(["serve", str(root), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                 *flags])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("embedrpc: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _outside_file(root, manifest):
    outside = root.parent / "elsewhere" / "model.onnx"
    outside.parent.mkdir()
    shutil.copy2(root / "onnx/fp32/model.onnx", outside)
    entry = artifact(manifest, "onnx-fp32")
    entry["path"] = entry["files"][0]["path"] = str(outside)


def _int8_is_fp32(root, manifest):
    fp32, int8 = artifact(manifest, "onnx-fp32"), artifact(manifest, "onnx-int8")
    int8.update(path=fp32["path"], files=fp32["files"])


def _passwd_listed(root, manifest):
    manifest["tokenizer"]["files"].append({"path": "/etc/passwd",
                                           "bytes": os.path.getsize("/etc/passwd"),
                                           "sha256": sha256_file("/etc/passwd")})


def _dotdot(root, manifest):
    manifest["tokenizer"]["files"].append({"path": "../../etc/passwd", "bytes": 1,
                                           "sha256": "0" * 64})


def _symlink_out(root, manifest):
    (root / "tokenizer_config.json").unlink()
    (root / "tokenizer_config.json").symlink_to("/etc/passwd")
    for entry in manifest["tokenizer"]["files"]:
        if entry["path"] == "tokenizer_config.json":
            entry.update(bytes=os.path.getsize("/etc/passwd"), sha256=sha256_file("/etc/passwd"))


def _setter(**changes):
    def edit(_root, manifest):
        manifest.update(changes)
    return edit


CASES = [
    (_outside_file, "artifact onnx-fp32 must be at onnx/fp32/model.onnx, not '/"),
    (_int8_is_fp32, "artifact onnx-int8 must be at onnx/int8/model.onnx, not "
                    "'onnx/fp32/model.onnx'"),
    (_passwd_listed, "file '/etc/passwd' is not a plain path inside the bundle"),
    (_dotdot, "file '../../etc/passwd' is not a plain path inside the bundle"),
    (_symlink_out, "'tokenizer_config.json' leads outside the bundle (to /etc/passwd)"),
    (lambda root, manifest: [manifest], "malformed manifest: the document must be an object, "
                                        "not list"),
    (lambda root, manifest: manifest.update(artifacts={"onnx-fp32": {}}),
     "malformed manifest: artifacts must be a list, not dict"),
    (_setter(matryoshka_dims=None), "malformed manifest: matryoshka_dims must be a list, not "
                                    "null"),
    (_setter(hidden_size="abc"), "malformed manifest: hidden_size must be an integer, not str "
                                 "'abc'"),
    (_setter(max_input_tokens=0), "invalid manifest: max_input_tokens 0 is not positive"),
    (_setter(prompts={}), "invalid manifest: default_prompt_name 'document' is not among the "
                          "prompts []"),
    (_setter(matryoshka_dims=[32, 16]), "matryoshka_dims [32, 16] must rise from 1 or more to "
                                        "hidden_size 64"),
    (lambda root, manifest: manifest["calibration"]["ranges"]["32"].update(min=[0.0] * 3),
     "calibration.ranges['32'] is not min/max lists of 32 finite numbers"),
    (lambda root, manifest: manifest["tokenizer"].update(pad_token_id="x"),
     "malformed manifest: tokenizer.pad_token_id must be an integer, not str 'x'"),
    (lambda root, manifest: artifact(manifest, "gguf-f16").update(bytes=3),
     "malformed manifest: artifacts[3] has unknown fields bytes"),
    (_setter(schema_version=1), "manifest schema_version 1 was written by an older embedrpc "
                                "export (this embedrpc reads 2); export the bundle again"),
    (_setter(architecture="bert"), "the manifest's architecture 'bert' is not 'qwen3'"),
    (lambda root, manifest: manifest["tokenizer"].update(appends_eos=False),
     "the manifest's tokenizer.appends_eos is False, but the tokenizer's post-processor "
     "appends one"),
    (lambda root, manifest: manifest["tokenizer"].update(eos_token_id=7),
     "the manifest's tokenizer.eos_token_id 7 is not the id 151643 the post-processor appends"),
    (lambda root, manifest: artifact(manifest, "onnx-fp32").update(lossy=True),
     "artifact onnx-fp32 says lossy True, but its format is not lossy"),
    (lambda root, manifest: artifact(manifest, "gguf-q8_0")["parity"].update(bar=0.5),
     "artifact gguf-q8_0 was held to a bar of 0.5, under its format's 0.995"),
    (lambda root, manifest: manifest["calibration"].update(prompts=["passage"]),
     "calibration.prompts ['passage'] are not among the prompts ['document', 'query']"),
    (lambda root, manifest: manifest["parity_probe"].update(probes=3),
     "parity/probes.json holds 24 probes, the manifest says 3"),
    (lambda root, manifest: manifest["parity_probe"].update(files=["parity/other.npy"]),
     "parity_probe.files ['parity/other.npy'] must be ['parity/probes.json', "
     "'parity/oracle.npy']"),
]


@pytest.mark.parametrize("edit,message", CASES, ids=[
    "outside-file", "int8-is-fp32", "passwd", "dotdot", "symlink-out", "list", "artifacts-dict",
    "dims-null", "hidden-abc", "max-input-0", "prompts-empty", "dims-order", "calibration",
    "pad-id-type", "unknown-field", "schema-1", "architecture", "appends-eos", "eos-id",
    "lossy", "lowered-bar", "calibration-prompts", "probe-count", "probe-files"])
def test_bad_manifest_is_one_line(capsys, monkeypatch, bundle, tmp_path, edit, message):
    root = copy_with(bundle, tmp_path, edit)
    assert message in serve_error(capsys, monkeypatch, root)


def _nan_gguf(root, manifest):
    """F16 token embeddings overwritten with NaN, the checksum updated to match."""
    path = root / artifact(manifest, "gguf-f16")["path"]
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    with open(path, "r+b") as handle:
        handle.seek(tensor.data_offset)
        handle.write(np.full(tensor.n_elements, np.nan, np.float16).tobytes())
    entry = artifact(manifest, "gguf-f16")["files"][0]
    entry.update(bytes=path.stat().st_size, sha256=sha256_file(path))


def test_nan_artifact_fails_its_self_check(capsys, monkeypatch, bundle, tmp_path):
    root = copy_with(bundle, tmp_path, _nan_gguf)
    line = serve_error(capsys, monkeypatch, root, "--artifact", "gguf-f16", "--cache",
                       str(tmp_path / "c"))
    assert "llamacpp gguf-f16: min cosine nan is below its bar 0.9999 in self-check" in line


def test_nan_vectors_fail_the_batch_never_ok(bundle, tmp_path):
    """Served past its self-check (the verdict forced here), a NaN artifact still never
    answers OK: INTERNAL, and health turns NOT_SERVING after three failed batches."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    root = copy_with(bundle, tmp_path, _nan_gguf)
    server = LoopbackServer(root, choice=Choice("llamacpp", "gguf-f16", "forced by the test"))
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as error:
                server.stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
            assert error.value.code() == grpc.StatusCode.INTERNAL
            assert "non-finite values" in error.value.details()
        health = health_pb2_grpc.HealthStub(server.channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop()
