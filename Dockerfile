# syntax=docker/dockerfile:1
# embedrpc serving images. The bundle (from `embedrpc export`) is mounted at /bundle.
#   docker build --target cpu  -t embedrpc:cpu  .   # llama.cpp + onnxruntime, no torch
#   docker build --target cuda -t embedrpc:cuda .   # onnxruntime-gpu (CUDA 12, cuDNN 9)
#   docker run -v $PWD/bundle:/bundle:ro -p 50051:50051 -p 9090:9090 embedrpc:cpu

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36

# ---- wheels: embedrpc, and llama-cpp-python built with runtime CPU dispatch ----------------
FROM ${PYTHON_IMAGE} AS wheels
ARG LLAMA_CPP_PYTHON_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
# Not -march=native of the build host: one CPU backend per x86 level, the best picked at start.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
RUN pip wheel --no-cache-dir --no-deps -w /wheels "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY export export
COPY protos protos
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

# ---- cpu: llama.cpp (GGUF) and onnxruntime (int8/fp32) -------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/embedrpc-*.whl /tmp/wheels/llama_cpp_python-*.whl \
 && rm -rf /tmp/wheels \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin embedrpc
USER 10001
ENV EMBEDRPC_BUNDLE=/bundle \
    EMBEDRPC_HOST=0.0.0.0 \
    EMBEDRPC_PORT=50051 \
    EMBEDRPC_METRICS_PORT=9090 \
    EMBEDRPC_METRICS_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME ["/bundle"]
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["embedrpc", "health", "--target", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["embedrpc", "serve"]

# ---- cuda: onnxruntime-gpu serving the fp16 ONNX artifact ----------------------------------
FROM ${CUDA_IMAGE} AS cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/embedrpc
ENV PATH=/opt/embedrpc/bin:$PATH
COPY --from=wheels /wheels/embedrpc-*.whl /tmp/
RUN pip install --no-cache-dir /tmp/embedrpc-*.whl \
 && pip uninstall -y onnxruntime \
 && pip install --no-cache-dir "onnxruntime-gpu>=1.18" \
 && rm -f /tmp/embedrpc-*.whl \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin embedrpc
USER 10001
# A token budget, not a secret:
# hadolint ignore=DL3064
ENV EMBEDRPC_BUNDLE=/bundle \
    EMBEDRPC_HOST=0.0.0.0 \
    EMBEDRPC_PORT=50051 \
    EMBEDRPC_METRICS_PORT=9090 \
    EMBEDRPC_METRICS_HOST=0.0.0.0 \
    EMBEDRPC_MAX_BATCH_TOKENS=16384 \
    PYTHONUNBUFFERED=1
VOLUME ["/bundle"]
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["embedrpc", "health", "--target", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["embedrpc", "serve"]
