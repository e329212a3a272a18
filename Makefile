# Newcomer commands (see README.md):
#   make demo   # set up, then run the bundled example with `rlrun local`
#   make test   # set up (virtualenv, install, control-plane binaries), then run every test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
UV_VERSION := 0.13.8
export UV_CACHE_DIR ?= $(HOME)/.cache/rlrun/uv
export UV_LINK_MODE ?= copy

.PHONY: setup controlplane test lint demo bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	uv venv -q --allow-existing --python $(PYTHON) $(VENV)
	uv pip install -q --python $(VENV)/bin/python -e '.[dev]'
	touch $@

controlplane:
	@tools/controlplane/build.sh >/dev/null

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup controlplane lint
	KUBEBUILDER_ASSETS=$$(tools/controlplane/build.sh) $(VENV)/bin/pytest -q

demo: setup
	$(VENV)/bin/rlrun local examples/color-codeword.yaml

clean:
	rm -rf $(VENV)
