"""A real single-node Kubernetes for the tests, inside namespaces the test creates (see node.sh).

`RealNode.start()` runs node.sh as PID 1 of new PID, network and mount namespaces (`unshare`), with
`--kill-child` and a parent-death signal on unshare: if pytest dies, the namespace's init dies, and the
kernel kills every process in it. Commands that talk to the cluster (`kubectl`, `helm`, `ctr`) enter its
network and mount namespaces with `nsenter`; the host never gets a route, link or mount of the node's.
`stop()` asks node.sh to stop its containers, waits for the namespace to be empty, then removes the pods'
cgroup root, the only thing of the node's that the kernel keeps on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(
    os.environ.get("RLRUN_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlrun"
)
CGROUP_FS = Path("/sys/fs/cgroup")
START_TIMEOUT_S = 180.0
"""Namespaces, containerd, control plane, node Ready, kube-proxy and CoreDNS (7-15 s here), plus margin
for a loaded machine (our images are imported after start: images.import_into)."""
STOP_TIMEOUT_S = 60.0


def tool_dir(script: str, env: str) -> Path:
    """A tools/*/build.sh output directory ($env overrides, as `make test` passes it)."""
    if value := os.environ.get(env):
        return Path(value)
    out = subprocess.run([str(REPO / script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _die_with_parent() -> None:
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def pids_in_namespace(ns_inode: int) -> list[int]:
    """Every host process whose PID namespace is `ns_inode`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "pid").st_ino == ns_inode:
                found.append(int(entry.name))
    return found


def cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory named `name` at the top of each v1/v2 hierarchy."""
    return [h / name for h in CGROUP_FS.iterdir() if (h / name).is_dir()]


def remove_cgroup_tree(root: Path) -> None:
    """rmdir a cgroup tree deepest first (cgroupfs only removes empty groups, never files)."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda e: -e[0].count("/")):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(dirpath)


@dataclass
class RealNode:
    """One node in `workdir`; containerd's image store in `containerd_root` (shared across sessions, so
    at most one node uses a given root at a time: a lock file guards it)."""

    workdir: Path
    containerd_root: Path
    proc: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    ns_inode: int = 0
    cgroup_name: str = field(default_factory=lambda: f"rlrun-realnode-{uuid.uuid4().hex[:8]}")
    timings: dict[str, float] = field(default_factory=dict)
    _lock: Any = None

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def log(self) -> Path:
        return self.workdir / "logs" / "node.log"

    def start(self) -> RealNode:
        tools = tool_dir("tools/realnode/build.sh", "RLRUN_REALNODE_TOOLS")
        cp_bin = tool_dir("tools/controlplane/build.sh", "KUBEBUILDER_ASSETS")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.containerd_root.parent / f".{self.containerd_root.name}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another real node uses {self.containerd_root}") from None
        for h in CGROUP_FS.iterdir():  # the pods' cgroup root; cpuset needs its cpus/mems filled in
            if h.is_dir() and not h.is_symlink() and (h / "cgroup.procs").exists():
                (h / self.cgroup_name).mkdir(exist_ok=True)
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if (h / f).exists():
                        (h / self.cgroup_name / f).write_text((h / f).read_text())
        timeout = START_TIMEOUT_S
        started = time.monotonic()
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
             "--kill-child=SIGKILL", "bash", str(HERE / "node.sh"), str(self.workdir), str(tools), str(cp_bin),
             str(self.containerd_root)],
            env={**os.environ, "RLRUN_REALNODE_CGROUP": f"/{self.cgroup_name}"},
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        while not (self.workdir / "ready").exists():
            if not self.init_pid and (kids := _children(self.proc.pid)):
                self.init_pid = kids[0]
                with contextlib.suppress(OSError):
                    self.ns_inode = os.stat(f"/proc/{self.init_pid}/ns/pid").st_ino
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                tail = self.log.read_text()[-4000:] if self.log.exists() else "(no log)"
                self.stop()
                raise RuntimeError(f"the real node did not come up within {timeout:.0f}s:\n{tail}")
            time.sleep(0.2)
        self.timings["start_s"] = time.monotonic() - started
        return self

    def enter(self, *argv: str) -> list[str]:
        """argv run inside the node's network and mount namespaces."""
        return ["nsenter", "-t", str(self.init_pid), "--net", "--mount", *argv]

    def ctr_argv(self, *args: str) -> list[str]:
        """A `ctr` command on the node's containerd, in the kubelet's (CRI) namespace."""
        return ["ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", *args]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.enter(*argv), capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
        return proc

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        kubectl = tool_dir("tools/controlplane/build.sh", "KUBEBUILDER_ASSETS") / "kubectl"
        return self.run(
            str(kubectl),
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            check=check,
            timeout=timeout,
            input=input,
        )

    def stop(self) -> None:
        """Graceful (node.sh removes its containers), then SIGKILL to the namespace's init; then the
        cgroup root. Bounded by STOP_TIMEOUT_S."""
        if self.proc is not None and self.proc.poll() is None:
            target = self.init_pid or self.proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.ns_inode:  # the kernel kills the rest of the namespace when its init exits; wait for it
            deadline = time.monotonic() + 10
            while pids_in_namespace(self.ns_inode) and time.monotonic() < deadline:
                time.sleep(0.1)
        for d in cgroup_dirs(self.cgroup_name):
            remove_cgroup_tree(d)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def scratch_dir(prefix: str) -> Path:
    """A short path (unix socket paths are limited to 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
