# Newcomer commands (see README.md):
#   make demo   # set up, then run the bundled example with `rlrun local`
#   make test   # set up (virtualenv, install, the real peers), then run every test, the real-node tier last
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
UV_VERSION := 0.13.8
export UV_CACHE_DIR ?= $(HOME)/.cache/rlrun/uv
# Hardlinks from the cache: a fresh clone's 6 GB virtualenv (CUDA torch) costs no disk (uv copies instead
# when the cache is on another filesystem).
export UV_LINK_MODE ?= hardlink

.PHONY: setup tools realnode-tools test test-realnode lint demo clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	uv venv -q --allow-existing --python $(PYTHON) $(VENV)
	uv pip install -q --python $(VENV)/bin/python -e '.[dev]'
	touch $@

# Real peers for the tests, each built or fetched once and cached by version under ~/.cache/rlrun.
tools:
	@tools/controlplane/build.sh >/dev/null
	@tools/minio/build.sh >/dev/null
	@tools/helm/fetch.sh >/dev/null
	@tools/vllm/build.sh >/dev/null
	@tools/mlflow/build.sh >/dev/null
	@tools/verifiers/build.sh >/dev/null

# The real single-node Kubernetes of tests/realnode (kubelet, kube-proxy, CoreDNS, base image; needs root).
realnode-tools: tools
	@tools/realnode/build.sh >/dev/null

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Bytecode is written (PYTHONDONTWRITEBYTECODE unset): every role and torchrun rank is a fresh process,
# and recompiling torch from source costs each one seconds of CPU.
# Every tier: unit, integration and e2e first (fast feedback), then the product on a real node.
test: setup tools lint
	env -u PYTHONDONTWRITEBYTECODE KUBEBUILDER_ASSETS=$$(tools/controlplane/build.sh) RLRUN_MINIO_BIN=$$(tools/minio/build.sh) \
	RLRUN_HELM=$$(tools/helm/fetch.sh) RLRUN_VLLM_PYTHON=$$(tools/vllm/build.sh) \
	RLRUN_MLFLOW=$$(tools/mlflow/build.sh) RLRUN_VERIFIERS_PYTHON=$$(tools/verifiers/build.sh) \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest -q -m "not realnode"
	$(MAKE) --no-print-directory test-realnode

# The product on a real node (root): images built from the Dockerfile, helm install, the example to Succeeded.
test-realnode: setup realnode-tools
	env -u PYTHONDONTWRITEBYTECODE KUBEBUILDER_ASSETS=$$(tools/controlplane/build.sh) \
	RLRUN_REALNODE_TOOLS=$$(tools/realnode/build.sh) RLRUN_HELM=$$(tools/helm/fetch.sh) \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH sh -c '$(VENV)/bin/python tests/realnode/images.py && $(VENV)/bin/pytest -q tests/realnode'

demo: setup
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/rlrun local examples/color-codeword.yaml

clean:
	rm -rf $(VENV) .venv-vllm
