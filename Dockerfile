# syntax=docker/dockerfile:1.7
#
# Two images from one file:
#   docker build --target operator -t rlrun-operator:0.1.0 .   # kopf operator: slim, no torch
#   docker build --target runtime  -t rlrun-runtime:0.1.0 .    # every pod role of a run
#
# The runtime image holds two virtualenvs because vLLM pins its own torch/transformers:
#   /opt/rlrun  rlrun[runtime]   trainer (torchrun), orchestrator, env-worker, CPU inference
#   /opt/vllm   vllm + rlrun     GPU inference (`python -m rlrun.runtime.inference.vllm_server`)
#
# Base images are pinned to a Debian release: the floating `python:3.12-slim` tag moved to trixie
# (glibc 2.41), which broke CUDA host-header compilation of JIT kernels at train time.

ARG PYTHON_BASE=python:3.12-slim-bookworm
ARG UV_VERSION=0.13.8
ARG VLLM_VERSION=0.32.0

# ---------------------------------------------------------------- build stages (tools stay here)
FROM ${PYTHON_BASE} AS builder
ARG UV_VERSION
ENV UV_LINK_MODE=copy PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY rlrun ./rlrun
COPY operator ./operator
COPY runtime ./runtime

FROM builder AS build-operator
RUN uv venv /opt/rlrun && uv pip install --no-cache --python /opt/rlrun/bin/python ".[operator]"

FROM builder AS build-runtime
ARG VLLM_VERSION
RUN uv venv /opt/rlrun && uv pip install --no-cache --python /opt/rlrun/bin/python ".[runtime]"
RUN uv venv /opt/vllm \
 && uv pip install --no-cache --python /opt/vllm/bin/python "vllm==${VLLM_VERSION}" \
 && uv pip install --no-cache --python /opt/vllm/bin/python --no-deps . \
 && uv pip install --no-cache --python /opt/vllm/bin/python msgspec==0.22.0 pyzmq==27.3.0

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
FROM ${PYTHON_BASE} AS runtime
LABEL org.opencontainers.image.title="rlrun-runtime" \
      org.opencontainers.image.description="rlrun runtime: trainer, orchestrator, env-worker, inference"
RUN groupadd --gid 1000 rlrun && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin rlrun \
 && mkdir -p /data && chown 1000:1000 /data
COPY --from=build-runtime /opt/rlrun /opt/rlrun
COPY --from=build-runtime /opt/vllm /opt/vllm
ENV PATH=/opt/rlrun/bin:$PATH PYTHONUNBUFFERED=1 HF_HOME=/data/hf-cache
USER 1000:1000
WORKDIR /home/rlrun
ENTRYPOINT ["/opt/rlrun/bin/rlrun"]
CMD ["--help"]
