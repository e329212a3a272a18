#!/usr/bin/env bash
# Provides a Python interpreter with PyPI's `verifiers` (the v1 API) installed, for the verifiers adapter
# (rlrun.runtime.envs.verifiers_env) and its tests, and prints its path.
#
#   tools/verifiers/build.sh                          # build (first time: ~400 MB, a minute) or reuse
#   RLRUN_VERIFIERS_PYTHON=/path/python build.sh      # use that interpreter, build nothing
#
# Its own virtualenv because verifiers 0.4 requires openai<3 while rlrun pins openai 3.x: the adapter runs
# verifiers in a bridge process on this interpreter and talks to it over stdin/stdout. The dependency set is
# pinned in requirements.txt next to this script. verifiers runs its agent (a "chat program") in an
# environment uv builds on first use: its wheels (chat-program.txt) are downloaded here, into
# <venv>/wheelhouse, and the bridge points uv at them with no index, so runs never reach the network.
set -euo pipefail

VERIFIERS_VERSION=0.4.0   # equal to the verifiers pin in requirements.txt

if [ -n "${RLRUN_VERIFIERS_PYTHON:-}" ]; then
  [ -x "$RLRUN_VERIFIERS_PYTHON" ] || { echo "RLRUN_VERIFIERS_PYTHON=$RLRUN_VERIFIERS_PYTHON is not an executable" >&2; exit 1; }
  echo "$RLRUN_VERIFIERS_PYTHON"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/verifiers
venv="$cache/$VERIFIERS_VERSION"
command -v uv >/dev/null || { echo "uv is required to build the verifiers virtualenv (make setup installs it)" >&2; exit 1; }

if [ ! -e "$venv/.complete" ]; then  # built in place; an interrupted build has no marker and is redone
  echo ">> building the verifiers $VERIFIERS_VERSION virtualenv into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  uv venv -q --python 3.11 "$venv"
  uv pip install -q --python "$venv/bin/python" -r "$here/requirements.txt" pip==25.3
  (cd / && "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$venv/wheelhouse" \
    -r "$here/chat-program.txt")  # from / : the checkout's operator/ folder would shadow the stdlib module
  (cd / && "$venv/bin/python" -c "import verifiers, verifiers.v1; print('>> verifiers', verifiers.__version__)") >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
