#!/usr/bin/env bash
# Regenerate the Python stubs of protos/ into protos/gen/python: the embedrpc.v1 package (with
# gRPC stubs) and tei/v1 (messages only; installed as embedrpc.tei.v1, see pyproject.toml).
# tests/test_protos.py fails when the committed stubs differ from what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-protos/gen/python}
PROTOC=("${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iprotos --python_out="$OUT"
        --pyi_out="$OUT")
mkdir -p "$OUT/embedrpc/v1" "$OUT/tei/v1"
"${PROTOC[@]}" --grpc_python_out="$OUT" protos/embedrpc/v1/embedding.proto
"${PROTOC[@]}" protos/tei/v1/tei.proto
echo '"""Generated gRPC/protobuf stubs of protos/embedrpc/v1 (scripts/gen_protos.sh)."""' \
  > "$OUT/embedrpc/v1/__init__.py"
echo '"""Generated messages of protos/tei/v1, the TEI-compatible API (scripts/gen_protos.sh)."""' \
  > "$OUT/tei/v1/__init__.py"
