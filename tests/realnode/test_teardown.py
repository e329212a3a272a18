"""The node lives in namespaces of its own and leaves nothing behind: a second, image-less node (own
containerd root, so it runs next to the session's) is started, inspected and stopped here.

- inside: no default route (no packet to a pod, Service or node address can leave the machine);
- after stop: no process left in its PID namespace, the host's links, mounts, iptables rules and the
  sysctls the kubelet and kube-proxy would set are exactly as before, its cgroup root is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from realnode import RealNode, cgroup_dirs, pids_in_namespace, scratch_dir

SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables", "net/netfilter/nf_conntrack_max",
)  # fmt: skip


def _host_state() -> dict[str, object]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    rules = {
        tool: subprocess.run([tool], capture_output=True, text=True).stdout.count("\n-A ")
        for tool in ("iptables-save", "ip6tables-save")
    }
    # mounts where a node would put them (other work on this machine may mount elsewhere meanwhile)
    ours = (
        "/run/containerd",
        "/run/netns",
        "/var/lib/kubelet",
        "/var/lib/cni",
        "/tmp/rlrun-rn-",
        "/proc/sys",
    )
    mounts = sorted(
        m
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if (m := line.split()[4]).startswith(ours)
    )
    sysctls = {}
    for s in SYSCTLS:
        p = Path("/proc/sys") / s
        sysctls[s] = p.read_text().strip() if p.exists() else None
    return {
        "links": sorted(line.split(":")[1].strip() for line in links.splitlines()),
        "iptables_rules": rules,
        "mounts": mounts,
        "sysctls": sysctls,
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }


@pytest.mark.timeout(600)
def test_the_node_is_isolated_and_stop_leaves_nothing_behind() -> None:
    before = _host_state()
    work, root = scratch_dir("rlrun-rn-td-"), scratch_dir("rlrun-rn-td-root-")
    node = RealNode(work, root)
    try:
        node.start()
        assert node.ns_inode and pids_in_namespace(node.ns_inode)
        assert node.run("ip", "route", "show", "default").stdout.strip() == ""
        routes = node.run("ip", "route", "show").stdout
        assert "default" not in routes and "172.31.255.1" in node.run("ip", "addr", "show", "rn0").stdout
        assert cgroup_dirs(node.cgroup_name)
        nodes = node.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/realnode"]
        assert _host_state() == before, "a running node changed the host"
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    assert pids_in_namespace(node.ns_inode) == []
    assert cgroup_dirs(node.cgroup_name) == []
    assert _host_state() == before
