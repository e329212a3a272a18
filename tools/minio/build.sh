#!/usr/bin/env bash
# Builds the real S3-compatible server (MinIO) that rlrun's upload integration tests run against,
# from its Go module, once per version, into a cache outside the repo. Prints the binary's path.
#
#   tools/minio/build.sh                 # build (first time ~7 min on 2 busy cores) or reuse
#   RLRUN_MINIO_BIN=/path/minio build.sh # use that binary, build nothing
set -euo pipefail

# MinIO tags are RELEASE.* names, so the module only has pseudo-versions; pin one exactly.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

if [ -n "${RLRUN_MINIO_BIN:-}" ]; then
  [ -x "$RLRUN_MINIO_BIN" ] || { echo "RLRUN_MINIO_BIN=$RLRUN_MINIO_BIN is not an executable" >&2; exit 1; }
  echo "$RLRUN_MINIO_BIN"
  exit 0
fi

cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/minio
dest="$cache/$MINIO_VERSION"
if [ -x "$dest/minio" ]; then echo "$dest/minio"; exit 0; fi

command -v go >/dev/null || { echo "go is required to build the test S3 server" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo ">> building MinIO $MINIO_VERSION into $dest" >&2
echo ">> first build takes ~7 min on 2 cores (~1250 packages); later runs reuse the cache" >&2
start=$(date +%s)
# The module has no replace directives, so a plain `go install mod@version` builds it.
GOBIN="$work" GOFLAGS=-buildvcs=false go install -v -trimpath -ldflags "-s -w" \
  "github.com/minio/minio@$MINIO_VERSION" 2>&1 |
  awk -v s="$start" '/^(#|go: )|\.go:[0-9]/ {print; fflush(); next}
    {n++} n%100==0 {printf ">> %d packages compiled (%ds)\n", n, systime()-s; fflush()}' >&2
[ -x "$work/minio" ] || { echo "build produced no minio binary" >&2; exit 1; }
mkdir -p "$dest"
mv "$work/minio" "$dest/minio.tmp" && mv "$dest/minio.tmp" "$dest/minio"
echo ">> MinIO built in $(( $(date +%s) - start ))s" >&2
echo "$dest/minio"
