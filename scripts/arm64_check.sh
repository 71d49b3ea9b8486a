#!/usr/bin/env bash
# The serving path on linux/arm64, checked here under emulation (fixtures/arm64_check.py): the
# arm64 image from the Dockerfile, a bundle exported on this x86-64 host, every artifact's
# parity and every runtime's self-check inside the image, llama.cpp's repacked Arm kernels,
# and a gRPC client outside. One command for a release; about 20 minutes on 2 cores the first
# time (debootstrap, the cross-compiled llama.cpp, the emulated pip installs), less after.
# Writes benchmarks/results/arm64-emulated-<host>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m fixtures.arm64_check "$@"
