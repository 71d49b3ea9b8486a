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
