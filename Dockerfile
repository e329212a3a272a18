# syntax=docker/dockerfile:1.7
#
# Three images from one file (each `spec.images` default names one):
#   docker build --target operator  -t ghcr.io/rlrun/rlrun-operator:0.1.0 .  # kopf operator: slim, no torch
#   docker build --target runtime   -t ghcr.io/rlrun/runtime:0.1.0 .        # trainer, orchestrator, env-worker, CPU inference
#   docker build --target inference -t ghcr.io/rlrun/inference:0.1.0 .      # GPU inference: the runtime + vLLM
#
# The inference image adds a second virtualenv because vLLM pins its own torch/transformers:
#   /opt/rlrun  rlrun[runtime,tracking]   every role (the whole runtime image; tracking: spec.tracking sinks)
#   /opt/vllm   vllm + rlrun     GPU inference (`python -m rlrun.runtime.inference.vllm_server`; first on PATH)
#
# Rebuilds are incremental: each venv gets its third-party packages from pyproject.toml alone (a layer that
# only a pyproject.toml change invalidates, downloads kept in a cache mount), then the project itself with
# --no-deps; a code-only (or README) change never reinstalls torch.
#
# PYTHON_BASE is any Debian bookworm image with python3 >= 3.11 and pip (the tests build FROM a local
# debootstrap image: tools/realnode/build.sh). It is pinned to a Debian release: the floating
# `python:3.12-slim` tag moved to trixie (glibc 2.41), which broke CUDA host-header compilation of JIT
# kernels at train time.

ARG PYTHON_BASE=python:3.12-slim-bookworm
ARG UV_VERSION=0.13.8
ARG VLLM_VERSION=0.32.0

# ---------------------------------------------------------------- build stages (tools stay here)
FROM ${PYTHON_BASE} AS builder
ARG UV_VERSION
# Bytecode compiled at build time: the pods run as uid 1000 and cannot write __pycache__ into /opt, so without
# it every process of every pod recompiled torch and transformers from source at start (minutes on a busy node).
ENV UV_LINK_MODE=copy UV_CACHE_DIR=/root/.cache/uv UV_COMPILE_BYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml ./

FROM builder AS build-operator
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/rlrun && uv pip install --python /opt/rlrun/bin/python -r pyproject.toml --extra operator
COPY setup.py README.md ./
COPY rlrun ./rlrun
COPY operator ./operator
COPY runtime ./runtime
RUN uv pip install --no-cache --python /opt/rlrun/bin/python --no-deps ".[operator]"

FROM builder AS build-vllm
ARG VLLM_VERSION
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/vllm \
 && uv pip install --python /opt/vllm/bin/python "vllm==${VLLM_VERSION}" msgspec==0.22.0 pyzmq==27.3.0
COPY setup.py README.md ./
COPY rlrun ./rlrun
COPY operator ./operator
COPY runtime ./runtime
RUN uv pip install --no-cache --python /opt/vllm/bin/python --no-deps .

# ---------------------------------------------------------------- operator image
FROM ${PYTHON_BASE} AS operator
LABEL org.opencontainers.image.title="rlrun-operator" \
      org.opencontainers.image.description="rlrun Kubernetes operator (kopf)"
RUN groupadd --gid 1000 rlrun && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin rlrun
COPY --from=build-operator /opt/rlrun /opt/rlrun
ENV PATH=/opt/rlrun/bin:$PATH PYTHONUNBUFFERED=1
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["/opt/rlrun/bin/rlrun", "operator"]

# ---------------------------------------------------------------- runtime image
# One stage, not a builder + `COPY --from`: the multi-GiB third-party layer (CUDA torch) then exists once in
# the builder's store and is reused by every code-only rebuild, instead of being copied into a new final
# layer each time. The image keeps uv (~40 MB): env-workers install user environment packages with it.
FROM ${PYTHON_BASE} AS runtime
ARG UV_VERSION
LABEL org.opencontainers.image.title="rlrun-runtime" \
      org.opencontainers.image.description="rlrun runtime: trainer, orchestrator, env-worker, CPU inference"
ENV UV_LINK_MODE=copy UV_CACHE_DIR=/root/.cache/uv UV_COMPILE_BYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 1000 rlrun && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin rlrun \
 && mkdir -p /data && chown 1000:1000 /data \
 && python3 -m pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/rlrun && uv pip install --python /opt/rlrun/bin/python -r pyproject.toml --extra runtime --extra tracking
COPY setup.py README.md ./
COPY rlrun ./rlrun
COPY operator ./operator
COPY runtime ./runtime
RUN uv pip install --no-cache --python /opt/rlrun/bin/python --no-deps ".[runtime,tracking]" && rm -rf ./build ./*.egg-info
ENV PATH=/opt/rlrun/bin:$PATH PYTHONUNBUFFERED=1 HF_HOME=/data/hf-cache
USER 1000:1000
WORKDIR /home/rlrun
ENTRYPOINT ["/opt/rlrun/bin/rlrun"]
CMD ["--help"]

# ---------------------------------------------------------------- GPU inference image (spec.images.inference)
FROM runtime AS inference
LABEL org.opencontainers.image.title="rlrun-inference" \
      org.opencontainers.image.description="rlrun GPU inference: vLLM with the rlrun extension"
COPY --from=build-vllm /opt/vllm /opt/vllm
# The operator runs `python -m rlrun.runtime.inference.vllm_server`: the vLLM venv's python comes first.
ENV PATH=/opt/vllm/bin:$PATH
USER 1000:1000
