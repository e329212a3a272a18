"""A real Kubernetes control plane for tests: etcd, kube-apiserver, and optionally kube-controller-manager,
kube-scheduler and kwok (fake nodes whose pods really get scheduled and become Running).

Binaries come from tools/controlplane/build.sh (cached by version) or $KUBEBUILDER_ASSETS. Every process is
started in its own session with a parent-death signal, so nothing outlives the test run even when pytest is
killed; `stop()` terminates them in reverse order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
KWOK_STAGES = Path(__file__).resolve().parent / "kwok" / "stages.yaml"
GPU_NODES = ("gpu-node-0", "gpu-node-1")
CPU_NODES = ("cpu-node-0",)


def binaries_dir() -> Path:
    """Where the control-plane binaries are: $KUBEBUILDER_ASSETS, else the build script's (cached) output."""
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        return Path(assets)
    out = subprocess.run(
        [str(REPO / "tools/controlplane/build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: new session + SIGKILL when the test process dies, so no child is ever orphaned."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_until(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; raise TimeoutError with `message` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the condition may not be observable yet
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for: {message}{detail}")
        time.sleep(interval)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """CA, apiserver serving cert (127.0.0.1 + kubernetes names), admin client cert, SA signing key pair.

    P-256 keys: generating four RSA keys took seconds of the fixture's start on a loaded 2-core machine."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=rlrun-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in (
        ("server", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=rlrun-test-admin", "client.ext"),
    ):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subj, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=d)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(
    path: Path, server: str, pki: Path, user: str = "admin", token: str | None = None
) -> Path:
    creds = (
        f"    token: {token}\n"
        if token
        else f"    client-certificate: {pki / 'admin.crt'}\n    client-key: {pki / 'admin.key'}\n"
    )
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {user}
  user:
{creds}contexts:
- name: test
  context: {{cluster: test, user: {user}}}
current-context: test
"""
    )
    return path


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ controllers, scheduler and kwok when `full`) in `workdir`."""

    workdir: Path
    full: bool = False
    bin_dir: Path = field(default_factory=binaries_dir)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    server: str = ""
    kubeconfig: Path = Path()

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (owned by the process for its lifetime)
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def start(self) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        make_pki(self.pki)
        try:
            self._start_etcd_and_apiserver()
            if self.full:
                self._start_cluster_components()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd_and_apiserver(self) -> None:
        client, peer, secure = free_port(), free_port(), free_port()
        self._spawn("etcd", [
            f"--data-dir={self.workdir / 'etcd'}", "--name=default",
            f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}", "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296", "--log-level=warn",
        ])  # fmt: skip
        p = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{client}", f"--secure-port={secure}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={p / 'server.crt'}", f"--tls-private-key-file={p / 'server.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.0.0.0/16",
            "--allow-privileged=true", "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=1",
        ])  # fmt: skip
        self.server = f"https://127.0.0.1:{secure}"
        self.kubeconfig = write_kubeconfig(self.workdir / "admin.kubeconfig", self.server, p)
        tls = ssl.create_default_context(cafile=str(p / "ca.crt"))
        tls.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))

        def ready() -> bool:
            self._check_alive()
            return httpx.get(f"{self.server}/readyz", verify=tls, timeout=2).status_code == 200

        wait_until(ready, 60, "kube-apiserver /readyz")

    def _start_cluster_components(self) -> None:
        kc, p = str(self.kubeconfig), self.pki
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            "--concurrent-gc-syncs=5", "--node-monitor-grace-period=120s",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'kcm-certs'}", "--v=1",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}", "--v=1",
        ])  # fmt: skip
        kwok_home = self.workdir / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        self._spawn("kwok", [
            f"--kubeconfig={kc}", f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16", "--node-ip=10.240.0.1", f"--server-address=127.0.0.1:{free_port()}",
        ])  # fmt: skip
        self.kubectl("apply", "-f", "-", input=self._nodes_manifest())
        wait_until(self._nodes_ready, 60, f"kwok nodes Ready: {GPU_NODES + CPU_NODES}", interval=0.5)
        wait_until(
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            60,
            "default ServiceAccount (controller-manager up)",
            interval=0.5,
        )

    def _nodes_manifest(self) -> str:
        docs = []
        for name in GPU_NODES + CPU_NODES:
            gpus = 8 if name in GPU_NODES else 0
            capacity = f'{{cpu: "64", memory: 512Gi, pods: "110", "nvidia.com/gpu": "{gpus}"}}'
            docs.append(
                f"""apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    rlrun.dev/test-node-kind: {"gpu" if gpus else "cpu"}
status:
  capacity: {capacity}
  allocatable: {capacity}
"""
            )
        return "---\n".join(docs)

    def _nodes_ready(self) -> bool:
        out = self.kubectl(
            "get", "nodes", "-o", 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}'
        ).stdout  # fmt: skip
        states = dict(item.split("=", 1) for item in out.split())
        return all(states.get(n) == "True" for n in GPU_NODES + CPU_NODES)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane; on failure the error carries stderr."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A `kubernetes.client.ApiClient` for this control plane (admin unless `kubeconfig` is given)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3  # graceful apiserver shutdown is not worth waiting for in tests
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
