#!/usr/bin/env bash
# Build an embedrpc image here, with or without an image registry:
#   bash scripts/container.sh [--target cpu|cuda] [--tag NAME] [--llama-cpu all|native]
#                             [--prebuilt-llama WHEEL] [--platform linux/amd64|linux/arm64]
# Starts a Docker engine when none answers (as root; installs Debian's docker.io if needed).
# The base is the official python image when it can be pulled; otherwise a Debian bookworm
# base made here with debootstrap (python3, python3-venv), carrying the build host's trusted CA
# certificates so that pip inside the build trusts what the host trusts (a TLS-inspecting proxy
# included). That base, and so the local image, holds those certificates: never push it.
# --llama-cpu all (release images) builds one llama.cpp CPU backend per x86 level (~45 min on 2
# cores); native builds for this host only (~6 min); --prebuilt-llama reuses a wheel.
# --platform linux/arm64 on an x86-64 host builds an arm64 image under emulation (Debian's
# qemu-user-static through binfmt_misc, registered here when it is not): an arm64 debootstrap
# base, and llama.cpp cross-compiled on the host (scripts/llama_wheel_arm64.sh) unless
# --prebuilt-llama names an aarch64 wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=cpu TAG= LLAMA_CPU=all PREBUILT= PLATFORM=
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --llama-cpu) LLAMA_CPU=$2; shift 2 ;;
    --prebuilt-llama) PREBUILT=$2; shift 2 ;;
    --platform) PLATFORM=$2; shift 2 ;;
    *) echo "container: unknown option $1" >&2; exit 2 ;;
  esac
done
HOST_ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
PLATFORM=${PLATFORM:-linux/$HOST_ARCH}
ARCH=${PLATFORM#linux/}
case "$ARCH" in amd64|arm64) ;; *) echo "container: unsupported platform $PLATFORM" >&2; exit 2 ;; esac
TAG=${TAG:-embedrpc:$TARGET}
OFFICIAL=python:3.11-slim-bookworm
LOCAL_BASE=embedrpc-base:bookworm
[ "$ARCH" = "$HOST_ARCH" ] || LOCAL_BASE=embedrpc-base:bookworm-$ARCH
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILD_CA=/etc/ssl/build-host-ca.pem

fail() { echo "container: $*" >&2; exit 1; }

ensure_engine() {
  docker info >/dev/null 2>&1 && return
  [ "$(id -u)" = 0 ] || fail "no Docker engine answers, and starting one needs root"
  if ! command -v dockerd >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  (setsid dockerd >/tmp/embedrpc-dockerd.log 2>&1 &)
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  fail "dockerd did not start (see /tmp/embedrpc-dockerd.log)"
}

ensure_emulation() {
  [ "$ARCH" = "$HOST_ARCH" ] && return
  local qemu=aarch64
  [ -e /proc/sys/fs/binfmt_misc/qemu-$qemu ] && return
  [ "$(id -u)" = 0 ] || fail "running $ARCH binaries needs qemu-user-static registered (as root)"
  if ! command -v update-binfmts >/dev/null || [ ! -e /usr/libexec/qemu-binfmt/$qemu-binfmt-P ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends qemu-user-static binfmt-support >/dev/null
  fi
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-$qemu >/dev/null 2>&1 || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-$qemu ] || fail "qemu-$qemu is not registered with binfmt_misc"
}

base_image() {
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then echo "$LOCAL_BASE"; return; fi
  if timeout 60 docker pull -q --platform "$PLATFORM" "$OFFICIAL" >/dev/null 2>&1; then
    echo "$OFFICIAL"; return
  fi
  echo "container: $OFFICIAL cannot be pulled; making $LOCAL_BASE with debootstrap" >&2
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  local rootfs
  rootfs=$(mktemp -d)
  debootstrap --arch "$ARCH" --variant=minbase \
    --include=python3,python3-venv,ca-certificates,libgomp1 \
    bookworm "$rootfs" "$MIRROR" >/tmp/embedrpc-debootstrap.log 2>&1 \
    || fail "debootstrap failed (see /tmp/embedrpc-debootstrap.log)"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs$BUILD_CA"
  tar -C "$rootfs" -c . | docker import --platform "$PLATFORM" \
    --change "ENV PIP_CERT=$BUILD_CA" --change "ENV SSL_CERT_FILE=$BUILD_CA" \
    --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
  echo "$LOCAL_BASE"
}

ensure_engine
ensure_emulation
BASE=$(base_image)
if [ -z "$PREBUILT" ] && [ "$ARCH" = arm64 ] && [ "$HOST_ARCH" != arm64 ]; then
  PREBUILT=$(bash scripts/llama_wheel_arm64.sh)
fi
if [ -n "$PREBUILT" ]; then
  rm -f prebuilt/llama_cpp_python-*.whl
  cp "$PREBUILT" prebuilt/
fi
# BuildKit where buildx is installed; else the classic builder, which builds every stage up
# to the target (the Dockerfile orders them so that the cpu target needs no more).
BUILDKIT=0
docker buildx version >/dev/null 2>&1 && BUILDKIT=1
if [ "$ARCH" = "$HOST_ARCH" ]; then
  DOCKER_BUILDKIT=$BUILDKIT docker build --target "$TARGET" --build-arg "PYTHON_IMAGE=$BASE" \
    --build-arg "LLAMA_CPP_CPU=$LLAMA_CPU" -t "$TAG" . >&2
elif [ "$BUILDKIT" = 1 ]; then
  docker build --platform "$PLATFORM" --target "$TARGET" --build-arg "PYTHON_IMAGE=$BASE" \
    --build-arg "LLAMA_CPP_CPU=$LLAMA_CPU" -t "$TAG" . >&2
else
  # The legacy builder runs the $ARCH base's binaries through qemu-user but labels what it
  # commits with the host's architecture: build, then relabel (scripts/image_platform.py).
  DOCKER_BUILDKIT=0 docker build --target "$TARGET" --build-arg "PYTHON_IMAGE=$BASE" \
    --build-arg "LLAMA_CPP_CPU=$LLAMA_CPU" -t "$TAG" . >&2
  docker save "$TAG" | python3 scripts/image_platform.py "$ARCH" | docker load >&2
fi
echo "$TAG"
