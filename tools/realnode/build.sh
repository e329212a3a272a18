#!/usr/bin/env bash
# Builds what a real single-node Kubernetes needs beyond the control plane (tools/controlplane), once per
# version, into a cache outside the repo, and prints that directory:
#   bin/kubelet bin/kube-proxy   from the SAME Kubernetes module as the control plane (tools/controlplane/go.mod)
#   bin/coredns                  CoreDNS from its Go module, reduced plugin set (coredns/main.go)
#   images/pause.tar             static pause (pause.c of that Kubernetes module) as image localhost/pause:3.10
#   images/coredns.tar           localhost/coredns:<v>
#   images/bookworm.tar          Debian bookworm minbase + python3 + pip (debootstrap) as localhost/bookworm-python:12,
#                                the base image the project's Dockerfile is built FROM in the test tier
# containerd, runc, CNI plugins, iptables, buildah and debootstrap come from Debian (installed with apt-get
# when missing; root). Nothing here assumes a registry: every image is made locally.
#
#   tools/realnode/build.sh                # build (first time ~10 min on 2 busy cores) or reuse
#   tools/realnode/build.sh base coredns   # only those parts (pause base coredns node)
#   RLRUN_REALNODE_TOOLS=/dir build.sh     # use that directory, build nothing
set -euo pipefail

K8S_VERSION=v1.36.3      # = tools/controlplane/build.sh (checked below)
COREDNS_VERSION=v1.15.0  # = coredns/go.mod
PAUSE_REF=localhost/pause:3.10
BASE_REF=localhost/bookworm-python:12
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBS=(containerd runc containernetworking-plugins iptables conntrack iproute2 buildah debootstrap)
ARTIFACTS=(bin/kubelet bin/kube-proxy bin/coredns images/pause.tar images/coredns.tar images/bookworm.tar)

here=$(cd "$(dirname "$0")" && pwd)
grep -q "^K8S_VERSION=$K8S_VERSION " "$here/../controlplane/build.sh" ||
  { echo "tools/realnode and tools/controlplane disagree on the Kubernetes version" >&2; exit 1; }

if [ -n "${RLRUN_REALNODE_TOOLS:-}" ]; then
  for a in "${ARTIFACTS[@]}"; do
    [ -e "$RLRUN_REALNODE_TOOLS/$a" ] || { echo "RLRUN_REALNODE_TOOLS=$RLRUN_REALNODE_TOOLS lacks $a" >&2; exit 1; }
  done
  echo "$RLRUN_REALNODE_TOOLS"; exit 0
fi

cache=${RLRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rlrun}
dest="$cache/realnode/$K8S_VERSION-coredns$COREDNS_VERSION-$DEBIAN_SUITE"
log() { echo ">> $*" >&2; }
have() { [ -e "$dest/$1" ]; }

missing=()
for d in "${DEBS[@]}"; do dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'ok installed' || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "needs root to apt-get install ${missing[*]}" >&2; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

complete=1
for a in "${ARTIFACTS[@]}"; do have "$a" || complete=0; done
if [ "$complete" = 1 ] && [ $# = 0 ]; then echo "$dest"; exit 0; fi

mkdir -p "$dest/bin" "$dest/images"
work=$(mktemp -d "$cache/realnode/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
publish() { mv "$1" "$dest/$2.tmp" && mv "$dest/$2.tmp" "$dest/$2"; }   # atomic: a half-built file is never seen
layer() { tar -C "$1" --numeric-owner --sort=name --mtime=@0 -cf "$2" .; }  # reproducible layer tar
mkimage() { python3 "$here/mkimage.py" "$@" >&2; }

node() {
  have bin/kubelet && have bin/kube-proxy && return 0
  command -v go >/dev/null || { echo "go is required" >&2; exit 1; }
  local s ldflags pkgv cgov minor
  s=$(date +%s)
  cp "$here/../controlplane/go.mod" "$here/../controlplane/go.sum" "$work/"
  pkgv=k8s.io/component-base/version cgov=k8s.io/client-go/pkg/version minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in $pkgv $cgov; do ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"; done
  (cd "$work" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$work/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  publish "$work/kubelet" bin/kubelet; publish "$work/kube-proxy" bin/kube-proxy
  log "kubelet + kube-proxy built in $(( $(date +%s) - s ))s"
}

pause() {
  have images/pause.tar && return 0
  local pause_c
  pause_c=$(cd "$work" && cp "$here/../controlplane/go.mod" "$here/../controlplane/go.sum" . &&
    GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c
  mkdir -p "$work/pause"
  gcc -Os -static -o "$work/pause/pause" "$pause_c"
  layer "$work/pause" "$work/pause.layer"
  mkimage "$work/pause.tar" "$PAUSE_REF" --layer "$work/pause.layer" --entrypoint '["/pause"]'
  publish "$work/pause.tar" images/pause.tar
}

coredns() {
  have bin/coredns && have images/coredns.tar && return 0
  local s; s=$(date +%s)
  mkdir -p "$work/coredns"
  cp "$here/coredns/main.go" "$here/coredns/go.mod" "$here/coredns/go.sum" "$work/coredns/"
  (cd "$work/coredns" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$work/coredns.bin" .)
  mkdir -p "$work/coredns-root"; cp "$work/coredns.bin" "$work/coredns-root/coredns"
  layer "$work/coredns-root" "$work/coredns.layer"
  mkimage "$work/coredns.tar" "localhost/coredns:${COREDNS_VERSION#v}" --layer "$work/coredns.layer" \
    --entrypoint '["/coredns"]'
  publish "$work/coredns.bin" bin/coredns; publish "$work/coredns.tar" images/coredns.tar
  log "CoreDNS built in $(( $(date +%s) - s ))s"
}

base() {
  have images/bookworm.tar && return 0
  local s root
  s=$(date +%s)
  root="$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,passwd "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*
  # This machine's trust store (package indexes are reached through its TLS proxy); a company base image
  # carries its own in the same place.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  layer "$root" "$work/bookworm.layer"
  mkimage "$work/bookworm.tar" "$BASE_REF" --layer "$work/bookworm.layer" --cmd '["python3"]' \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --env PIP_BREAK_SYSTEM_PACKAGES=1
  publish "$work/bookworm.tar" images/bookworm.tar
  log "bookworm base image built in $(( $(date +%s) - s ))s"
}

[ $# -gt 0 ] || set -- pause base coredns node
for part in "$@"; do "$part"; done
echo "$dest"
