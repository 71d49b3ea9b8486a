#!/usr/bin/env bash
# Cross-compile llama-cpp-python's wheel for linux/aarch64 on an x86-64 host, with Debian's
# gcc-aarch64-linux-gnu / g++-aarch64-linux-gnu (installed here when missing, as root). The
# wheel is ctypes-only (no CPython ABI), so no aarch64 Python is needed to build it.
#   bash scripts/llama_wheel_arm64.sh [OUT_DIR]     # prints the wheel's path (cached)
# CPU target: LLAMA_ARM_ARCH (default armv8.2-a+dotprod+fp16: Neoverse N1/N2/V1/V2, Graviton
# 2-4, Ampere Altra, Cortex-A76 (Raspberry Pi 5), Apple silicon VMs; not Cortex-A72/A53). ggml's
# Arm kernels are chosen at compile time: a CPU without these features gets SIGILL, not a
# slower path (embedrpc's self-check then names the crash and serves another runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${EMBEDRPC_LLAMA_CPP_VERSION:-0.3.36}
ARCH=${LLAMA_ARM_ARCH:-armv8.2-a+dotprod+fp16}
OUT=${1:-${EMBEDRPC_CACHE:-$HOME/.cache/embedrpc}/wheels-arm64}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
if ls "$OUT"/llama_cpp_python-"$VERSION"-*linux_aarch64.whl >/dev/null 2>&1; then
  ls "$OUT"/llama_cpp_python-"$VERSION"-*linux_aarch64.whl | head -1
  exit 0
fi
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "llama_wheel_arm64: install g++-aarch64-linux-gnu" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/toolchain.cmake" <<CMAKE
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
CMAKE
echo "llama_wheel_arm64: cross-compiling llama-cpp-python $VERSION for $ARCH (several minutes)" >&2
CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$WORK/toolchain.cmake -DGGML_NATIVE=OFF \
  -DGGML_CPU_ARM_ARCH=$ARCH -DLLAMA_OPENSSL=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) _PYTHON_HOST_PLATFORM=linux-aarch64 \
  "$PYTHON" -m pip --disable-pip-version-check -q wheel --no-deps --no-binary :all: \
  -w "$WORK/dist" "llama-cpp-python==$VERSION" >&2
WHEEL=$(ls "$WORK"/dist/llama_cpp_python-"$VERSION"-*.whl)
case "$WHEEL" in
  *linux_aarch64.whl) ;;
  *) "$PYTHON" -m pip -q install wheel >&2
     "$PYTHON" -m wheel tags --platform-tag linux_aarch64 --remove "$WHEEL" >&2
     WHEEL=$(ls "$WORK"/dist/llama_cpp_python-"$VERSION"-*linux_aarch64.whl) ;;
esac
cp "$WHEEL" "$OUT/"
ls "$OUT"/llama_cpp_python-"$VERSION"-*linux_aarch64.whl | head -1
