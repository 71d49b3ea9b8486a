#!/usr/bin/env bash
# Install, then run the main job offline: build a random-weight Qwen3 checkpoint with the real
# Qwen3 tokenizer, export it to a parity-checked bundle, and validate the bundle.
# With hub access, replace the checkpoint with jinaai/jina-embeddings-v5-text-small-retrieval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
WORK=${DEMO_DIR:-demo}
.venv/bin/python -m embedrpc.export.random_checkpoint "$WORK/checkpoint" --shape tiny --max-seq-length 512
.venv/bin/embedrpc export "$WORK/checkpoint" --out "$WORK/bundle" --force
.venv/bin/embedrpc validate "$WORK/bundle"
