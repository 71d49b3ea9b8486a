"""The committed Python stubs are what scripts/gen_protos.sh makes of protos/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_up_to_date(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for package in ("embedrpc/v1", "tei/v1"):
        committed = ROOT / "protos" / "gen" / "python" / package
        for fresh in sorted((tmp_path / package).iterdir()):
            assert (committed / fresh.name).read_text() == fresh.read_text(), \
                f"{package}/{fresh.name} is stale: run scripts/gen_protos.sh"


def test_enums_follow_buf_style():
    from embedrpc.v1 import embedding_pb2 as pb

    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED")
    assert pb.DESCRIPTOR.package == "embedrpc.v1"


BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


def buf(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    if not BUF.exists():
        import pytest

        pytest.fail("buf is required: npm ci --prefix tools/buf (scripts/install.sh)")
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_buf_lint_passes():
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_breaking_against_the_released_v0_1_0(tmp_path):
    """protos/released/v0.1.0.binpb is the API as released (git tag v0.1.0), built by
    `buf build .git#tag=v0.1.0,subdir=protos`."""
    done = buf("breaking", "--against", "protos/released/v0.1.0.binpb")
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: renumber one field of a copy and it must object.
    import shutil

    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("gen"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "embedrpc" / "v1" / "embedding.proto"
    proto.write_text(proto.read_text().replace("Task task = 3;", "Task task = 30;"))
    broken = buf("breaking", "--against", str(ROOT / "protos/released/v0.1.0.binpb"),
                 cwd=tmp_path)
    assert broken.returncode != 0 and "task" in broken.stdout


def test_only_embedstream_reuses_messages():
    """buf.yaml exempts embedding.proto from the request/response naming rules for the one
    deliberate reuse; every other RPC keeps its own <Method>Request/<Method>Response."""
    from embedrpc.v1 import embedding_pb2 as pb

    for method in pb.DESCRIPTOR.services_by_name["EmbeddingService"].methods:
        if method.name == "EmbedStream":
            assert (method.input_type.name, method.output_type.name) == \
                ("EmbedRequest", "EmbedResponse")
            continue
        assert (method.input_type.name, method.output_type.name) == \
            (f"{method.name}Request", f"{method.name}Response")
