#!/usr/bin/env bash
# Regenerate the Python stubs of protos/ into protos/gen/python (the embedrpc.v1 package).
# tests/test_protos.py fails when the committed stubs differ from what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-protos/gen/python}
mkdir -p "$OUT/embedrpc/v1"
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iprotos --python_out="$OUT" --pyi_out="$OUT" \
  --grpc_python_out="$OUT" protos/embedrpc/v1/embedding.proto
echo '"""Generated gRPC/protobuf stubs of protos/embedrpc/v1 (scripts/gen_protos.sh)."""' \
  > "$OUT/embedrpc/v1/__init__.py"
