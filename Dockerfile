# embedrpc serving images. The bundle (from `embedrpc export`) is mounted at /bundle.
#   docker build --target cpu  -t embedrpc:cpu  .   # llama.cpp + onnxruntime, no torch
#   docker build --target cuda -t embedrpc:cuda .   # onnxruntime-gpu (CUDA 12, cuDNN 9)
#   docker run -v $PWD/bundle:/bundle:ro -p 50051:50051 -p 9090:9090 embedrpc:cpu
# Where no image registry answers, scripts/container.sh makes a Debian base with debootstrap
# and passes it as PYTHON_IMAGE (any Debian/Ubuntu image with python3 and python3-venv works).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# all: one llama.cpp CPU backend per x86 level, the best chosen at start (release images; ~45
# min on 2 cores). native: tuned to the build host only (a quick local test image).
ARG LLAMA_CPP_CPU=all

# ---- embedrpc's own wheel ------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS embedrpc-wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY export export
COPY protos protos
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels .

# ---- llama-cpp-python: a wheel dropped in prebuilt/, or built here ---------------------------
FROM ${PYTHON_IMAGE} AS llama-wheel
ARG LLAMA_CPP_PYTHON_VERSION
ARG LLAMA_CPP_CPU
COPY prebuilt/ /prebuilt/
# hadolint ignore=DL3008
RUN set -eu; mkdir -p /wheels; \
    if ls /prebuilt/llama_cpp_python-"${LLAMA_CPP_PYTHON_VERSION}"-*.whl >/dev/null 2>&1; then \
      cp /prebuilt/llama_cpp_python-"${LLAMA_CPP_PYTHON_VERSION}"-*.whl /wheels/; \
    else \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
        && rm -rf /var/lib/apt/lists/*; \
      python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir --upgrade pip; \
      if [ "${LLAMA_CPP_CPU}" = native ]; then CMAKE_ARGS="-DGGML_NATIVE=ON"; \
      else CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"; fi; \
      CMAKE_ARGS="$CMAKE_ARGS" /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"; \
    fi

# ---- cpu: llama.cpp (GGUF), onnxruntime (int8/fp32) and OpenVINO (int8/bf16 IR) -------------
FROM ${PYTHON_IMAGE} AS cpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/embedrpc
ENV PATH=/opt/embedrpc/bin:$PATH
# The serving dependencies first, in a layer of their own: a change to embedrpc's code does not
# install them again (under arm64 emulation that is minutes).
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['openvino']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/pyproject.toml /tmp/requirements.txt
COPY --from=embedrpc-wheel /wheels /tmp/wheels
COPY --from=llama-wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir "$(echo /tmp/wheels/embedrpc-*.whl)[openvino]" \
      /tmp/wheels/llama_cpp_python-*.whl \
 && rm -rf /tmp/wheels \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin embedrpc \
 && mkdir -p /var/cache/embedrpc && chown 10001 /var/cache/embedrpc
USER 10001
ENV EMBEDRPC_BUNDLE=/bundle \
    EMBEDRPC_HOST=0.0.0.0 \
    EMBEDRPC_PORT=50051 \
    EMBEDRPC_METRICS_PORT=9090 \
    EMBEDRPC_METRICS_HOST=0.0.0.0 \
    EMBEDRPC_CACHE=/var/cache/embedrpc \
    PYTHONUNBUFFERED=1
VOLUME ["/bundle", "/var/cache/embedrpc"]
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["embedrpc", "health", "--target", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
# tini as PID 1: signals forwarded, the self-check's children reaped, and a crash of the
# server ends the container (a PID 1 that ignores its own fatal signal would hang it).
ENTRYPOINT ["tini", "--", "embedrpc", "serve"]

# ---- cuda: onnxruntime-gpu serving the fp16 ONNX artifact ----------------------------------
FROM ${CUDA_IMAGE} AS cuda
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/embedrpc
ENV PATH=/opt/embedrpc/bin:$PATH
COPY --from=embedrpc-wheel /wheels/embedrpc-*.whl /tmp/
RUN pip install --no-cache-dir /tmp/embedrpc-*.whl \
 && pip uninstall -y onnxruntime \
 && pip install --no-cache-dir "onnxruntime-gpu>=1.18" \
 && rm -f /tmp/embedrpc-*.whl \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin embedrpc \
 && mkdir -p /var/cache/embedrpc && chown 10001 /var/cache/embedrpc
USER 10001
# A token budget, not a secret:
# hadolint ignore=DL3064
ENV EMBEDRPC_BUNDLE=/bundle \
    EMBEDRPC_HOST=0.0.0.0 \
    EMBEDRPC_PORT=50051 \
    EMBEDRPC_METRICS_PORT=9090 \
    EMBEDRPC_METRICS_HOST=0.0.0.0 \
    EMBEDRPC_CACHE=/var/cache/embedrpc \
    EMBEDRPC_MAX_BATCH_TOKENS=16384 \
    PYTHONUNBUFFERED=1
VOLUME ["/bundle", "/var/cache/embedrpc"]
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["embedrpc", "health", "--target", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
# tini as PID 1: signals forwarded, the self-check's children reaped, and a crash of the
# server ends the container (a PID 1 that ignores its own fatal signal would hang it).
ENTRYPOINT ["tini", "--", "embedrpc", "serve"]
