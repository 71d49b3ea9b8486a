#!/usr/bin/env bash
# The prepared CUDA check, one command on a host with an NVIDIA GPU and network access:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Installs embedrpc with the export extra, swaps onnxruntime for onnxruntime-gpu, exports the
# 0.6B-shape random checkpoint to ONNX fp32/fp16, then checks onnx-cuda parity (against the
# stored sentence-transformers oracle and against the CPU fp32 artifact) and measures raw and
# served throughput and latency. Results: OUT_DIR/gpu-check.json. About 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
bash scripts/install.sh
.venv/bin/python -m pip uninstall -q -y onnxruntime
.venv/bin/python -m pip install -q "onnxruntime-gpu>=1.18"
PYTHONUNBUFFERED=1 .venv/bin/python -m benchmarks.gpu_check --out "$OUT"
