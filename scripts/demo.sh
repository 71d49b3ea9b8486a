#!/usr/bin/env bash
# Install, then run the main job offline: build a random-weight Qwen3 checkpoint with the real
# Qwen3 tokenizer, export it to a parity-checked bundle, serve it over gRPC, embed a query and a
# document through the server, and shut it down with SIGTERM.
# With hub access, export jinaai/jina-embeddings-v5-text-small-retrieval instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
WORK=${DEMO_DIR:-demo}
PORT=${DEMO_PORT:-50151}
BIN=.venv/bin
$BIN/python -m fixtures.random_checkpoint "$WORK/checkpoint" --shape tiny --max-seq-length 512
$BIN/embedrpc export "$WORK/checkpoint" --out "$WORK/bundle" --force
$BIN/embedrpc validate "$WORK/bundle"

$BIN/embedrpc serve "$WORK/bundle" --host 127.0.0.1 --port "$PORT" --metrics-port 0 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  $BIN/embedrpc health --target "127.0.0.1:$PORT" --timeout 1 >/dev/null 2>&1 && break
  sleep 0.5
done
$BIN/embedrpc embed --target "127.0.0.1:$PORT" --info
$BIN/embedrpc embed --target "127.0.0.1:$PORT" --task query --dimensions 32 "what is a vector database?"
$BIN/embedrpc embed --target "127.0.0.1:$PORT" --task document --encoding binary \
  "A vector database stores embeddings and finds nearest neighbours."
kill -TERM $SERVER
wait $SERVER
trap - EXIT
echo "demo: done (bundle in $WORK/bundle)"
