#!/usr/bin/env bash
# Provides a real MLflow tracking server for the tests (the `mlflow` command of its own virtualenv) and
# prints its path.
#
#   tools/mlflow/build.sh                   # build (first time: ~1 GB, a minute) or reuse
#   RLRUN_MLFLOW=/path/to/mlflow build.sh   # use that command, build nothing
#
# Its own virtualenv because the server package (`mlflow`) pins pyarrow<26 and pulls pandas, scikit-learn
# and Flask; rlrun's .venv only needs the client (`mlflow-skinny`, the `tracking` extra, same version).
set -euo pipefail

MLFLOW_VERSION=3.17.2   # equal to the mlflow-skinny pin in pyproject.toml (a unit test keeps them equal)

if [ -n "${RLRUN_MLFLOW:-}" ]; then
  [ -x "$RLRUN_MLFLOW" ] || { echo "RLRUN_MLFLOW=$RLRUN_MLFLOW is not an executable" >&2; exit 1; }
  echo "$RLRUN_MLFLOW"
  exit 0
fi

cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/mlflow
venv="$cache/$MLFLOW_VERSION"
command -v uv >/dev/null || { echo "uv is required to build the MLflow virtualenv (make setup installs it)" >&2; exit 1; }

if [ ! -e "$venv/.complete" ]; then  # built in place; an interrupted build has no marker and is redone
  echo ">> building the MLflow $MLFLOW_VERSION server virtualenv into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  uv venv -q --python 3.11 "$venv"
  uv pip install -q --python "$venv/bin/python" "mlflow==$MLFLOW_VERSION"
  "$venv/bin/mlflow" --version >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/mlflow"
