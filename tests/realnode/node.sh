#!/usr/bin/env bash
# A real single-node Kubernetes INSIDE namespaces that tests/realnode/realnode.py creates for it:
#   unshare --net --mount --pid --fork --mount-proc --propagation private  node.sh DIR TOOLS CP_BIN ROOT
# This script is PID 1 of the new PID namespace: when it exits, the kernel kills every process left in it
# (containerd, shims, containers, the control plane), and the network and mount namespaces, with every
# link, route, iptables rule and mount made here, vanish with their last process. It touches nothing of
# the host's: /run, /var/lib/cni and /var/lib/kubelet are private tmpfs mounts, the kernel sysctls the
# kubelet would set are bind-mounted private files, and the network has no default route (only the node
# IP on an empty bridge, the pod bridge and the service range), so no packet can leave the machine.
#
#   DIR     work directory (logs/, pki/, etc/, ready marker, the admin kubeconfig)
#   TOOLS   tools/realnode/build.sh output (bin/kubelet, bin/kube-proxy, images/*.tar)
#   CP_BIN  tools/controlplane/build.sh output (etcd, kube-apiserver, ... , kubectl)
#   ROOT    containerd root (content store + snapshots; a cache kept between sessions)
# SIGTERM: stop the node components, remove every container, then exit (and the kernel does the rest).
set -euo pipefail
DIR=$1 TOOLS=$2 CP_BIN=$3 ROOT=$4
NODE=realnode NODE_IP=172.31.255.1 CGROUP_ROOT=${RLRUN_REALNODE_CGROUP:?}
HERE=$(cd "$(dirname "$0")" && pwd)
LOGS=$DIR/logs PKI=$DIR/pki ETC=$DIR/etc
mkdir -p "$LOGS" "$PKI" "$ETC" "$DIR/pids"
exec >>"$LOGS/node.log" 2>&1
ts() { date +%s.%N; }
mark() { echo "$(date +%T.%N | cut -c1-12) $*"; }
spawn() { local name=$1; shift; "$@" >"$LOGS/$name.log" 2>&1 </dev/null & echo $! >"$DIR/pids/$name"; }
wait_for() {  # wait_for SECONDS DESC CMD...
  local end=$(( $(date +%s) + $1 )) desc=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { mark "timeout waiting for $desc"; return 1; }
    sleep 0.2
  done
}
kc() { "$CP_BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
ctr_() { ctr --address /run/containerd/containerd.sock -n k8s.io "$@"; }

stop_all() {
  trap - TERM INT
  mark "stopping"
  for n in kube-proxy kubelet; do [ -f "$DIR/pids/$n" ] && kill -TERM "$(cat "$DIR/pids/$n")" 2>/dev/null; done
  sleep 0.5
  if ctr_ version >/dev/null 2>&1; then  # containers out of the persistent containerd root
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    sleep 0.5
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  mark "stopped"
  exit 0
}
trap stop_all TERM INT

# ---------------------------------------------------------------- namespaces: mounts, sysctls, network
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /var/lib/cni 2>/dev/null || { mkdir -p /var/lib/cni && mount -t tmpfs tmpfs /var/lib/cni; }
mkdir -p /var/lib/kubelet && mount -t tmpfs -o mode=755 tmpfs /var/lib/kubelet
# The kubelet sets these kernel-wide sysctls at start: give it private copies to write.
mkdir -p "$DIR/sysctl"
for s in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  f="$DIR/sysctl/${s//\//.}"; cat "/proc/sys/$s" >"$f"; mount --bind "$f" "/proc/sys/$s"
done
ip link set lo up
ip link add rn0 type bridge            # the kernel has no dummy driver; the kubelet refuses a loopback node IP
ip addr add $NODE_IP/32 dev rn0
ip link set rn0 up
ip route add 10.0.0.0/16 dev rn0       # the service range, for the node's own connections (kube-proxy DNATs)
echo 1 >/proc/sys/net/ipv4/ip_forward  # this network namespace's own copy
[ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] || echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
if ip route show default | grep -q .; then mark "a default route exists: refusing to run"; exit 1; fi

# ---------------------------------------------------------------- configs
sub() { sed -e "s#@DIR@#$DIR#g" -e "s#@ROOT@#$ROOT#g" -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@CGROUP_ROOT@#$CGROUP_ROOT#g" "$1"; }
mkdir -p "$DIR/cni/net.d" "$DIR/kubelet" "$DIR/pod-logs" "$DIR/plugins" "$ROOT"
for f in containerd.toml kubelet.yaml kube-proxy.yaml 10-bridge.conflist; do sub "$HERE/etc/$f" >"$ETC/$f"; done
mv "$ETC/10-bridge.conflist" "$DIR/cni/net.d/"
printf 'search cluster.local\n' >"$ETC/resolv.conf"
[ -f "$PKI/sa.key" ] || "$HERE/mkpki.sh" "$PKI" $NODE $NODE_IP
kubeconfig() {
  cat >"$1" <<K
apiVersion: v1
kind: Config
clusters: [{name: rn, cluster: {server: "https://$NODE_IP:6443", certificate-authority: $PKI/ca.crt}}]
users: [{name: u, user: {client-certificate: $PKI/$2.crt, client-key: $PKI/$2.key}}]
contexts: [{name: rn, context: {cluster: rn, user: u}}]
current-context: rn
K
}
kubeconfig "$DIR/admin.kubeconfig" admin
kubeconfig "$DIR/kubelet.kubeconfig" kubelet

# ---------------------------------------------------------------- containerd + images
s=$(ts)
spawn containerd containerd --config "$ETC/containerd.toml"
wait_for 30 containerd ctr_ version
mark "containerd up ($(echo "$(ts) - $s" | bc)s)"
for image in "$TOOLS/images/pause.tar" "$TOOLS/images/coredns.tar"; do  # ours: images.py streams them in
  s=$(ts)
  ctr_ images import --no-unpack=false "$image" >"$LOGS/import.log" 2>&1 || { cat "$LOGS/import.log"; exit 1; }
  mark "imported $(basename "$image") ($(echo "$(ts) - $s" | bc)s)"
done

# ---------------------------------------------------------------- control plane
s=$(ts)
spawn etcd "$CP_BIN/etcd" --data-dir="$DIR/etcd" --name=default \
  --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
  --initial-cluster=default=http://127.0.0.1:2380 --unsafe-no-fsync=true --log-level=warn \
  --listen-metrics-urls=http://127.0.0.1:2381
spawn kube-apiserver "$CP_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
  --secure-port=6443 --bind-address=$NODE_IP --advertise-address=$NODE_IP \
  --cert-dir="$DIR/apiserver-certs" --tls-cert-file="$PKI/server.crt" --tls-private-key-file="$PKI/server.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --authorization-mode=Node,RBAC --service-cluster-ip-range=10.0.0.0/16 \
  --enable-priority-and-fairness=false --profiling=false --v=1
wait_for 90 "apiserver readyz" kc get --raw /readyz
mark "apiserver ready ($(echo "$(ts) - $s" | bc)s)"
spawn kube-controller-manager "$CP_BIN/kube-controller-manager" --kubeconfig="$DIR/admin.kubeconfig" \
  --authentication-kubeconfig="$DIR/admin.kubeconfig" --authorization-kubeconfig="$DIR/admin.kubeconfig" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers='*,-cloud-node-lifecycle,-service-lb-controller,-route' \
  --allocate-node-cidrs=true --cluster-cidr=10.244.0.0/16 --node-cidr-mask-size=24 \
  --service-cluster-ip-range=10.0.0.0/16 \
  --bind-address=127.0.0.1 --secure-port=10257 --cert-dir="$DIR/kcm-certs" --v=1
spawn kube-scheduler "$CP_BIN/kube-scheduler" --kubeconfig="$DIR/admin.kubeconfig" \
  --authentication-kubeconfig="$DIR/admin.kubeconfig" --authorization-kubeconfig="$DIR/admin.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --cert-dir="$DIR/scheduler-certs" --v=1

# ---------------------------------------------------------------- node
s=$(ts)
spawn kubelet "$TOOLS/bin/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
  --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet-certs" --hostname-override=$NODE --node-ip=$NODE_IP --v=1
node_ready() { kc get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
wait_for 120 "node Ready" node_ready
mark "node Ready ($(echo "$(ts) - $s" | bc)s)"
spawn kube-proxy "$TOOLS/bin/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1
wait_for 60 "kube-proxy healthz" curl -sf http://127.0.0.1:10256/healthz
s=$(ts)
kc apply -f "$HERE/etc/coredns.yaml" >/dev/null
wait_for 120 "CoreDNS ready" kc -n kube-system rollout status deployment/coredns --timeout=2s
mark "CoreDNS ready ($(echo "$(ts) - $s" | bc)s)"
touch "$DIR/ready"
while :; do sleep 1 & wait $! || true; done
