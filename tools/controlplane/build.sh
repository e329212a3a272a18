#!/usr/bin/env bash
# Builds the real Kubernetes control plane that rlrun's integration tests run against
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) from Go modules,
# once per version, into a cache outside the repo. Prints the directory holding the binaries.
#
#   tools/controlplane/build.sh            # build (first time ~25 min on 2 cores) or reuse
#   KUBEBUILDER_ASSETS=/dir build.sh       # use those binaries, build nothing
set -euo pipefail

K8S_VERSION=v1.36.3   # keep in step with go.mod
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  for b in "${BINARIES[@]}"; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}/envtest
dest="$cache/$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION"
complete=1
for b in "${BINARIES[@]}"; do [ -x "$dest/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$dest"; exit 0; fi

command -v go >/dev/null || { echo "go is required to build the test control plane" >&2; exit 1; }
cd "$(dirname "$0")"
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo ">> building Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION into $dest" >&2
echo ">> first build takes ~25 min on 2 cores; later runs reuse the cache" >&2
pkgv=k8s.io/component-base/version
cgov=k8s.io/client-go/pkg/version
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in $pkgv $cgov; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
start=$(date +%s)
GOFLAGS=-mod=mod go build -v -trimpath -ldflags "$ldflags" -o "$work/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 \
  sigs.k8s.io/kwok/cmd/kwok 2>&1 |
  awk -v s="$start" '{n++} n%200==0 {printf ">> %d packages compiled (%ds)\n", n, systime()-s; fflush()}' >&2
mv "$work/server" "$work/etcd"
for b in "${BINARIES[@]}"; do [ -x "$work/$b" ] || { echo "build produced no $b" >&2; exit 1; }; done
mkdir -p "$dest"
for b in "${BINARIES[@]}"; do mv "$work/$b" "$dest/$b.tmp" && mv "$dest/$b.tmp" "$dest/$b"; done
echo ">> control plane built in $(( $(date +%s) - start ))s" >&2
echo "$dest"
