"""The bundled CPU example on a real single-node Kubernetes next to the same run under `rlrun local`.

Measured in one benchmark run, one after the other (never concurrently: 2 cores): image builds from the
Dockerfile (buildah) with sizes, the node's start-up (namespaces, containerd, control plane, node Ready,
CoreDNS), the images streamed into its containerd, `helm install`, then `kubectl apply` of
manifests/examples/color-codeword.yaml -> first step in status and -> Succeeded; then `rlrun local` of
the same file -> first step in progress.json and -> exit. `--cold` imports the images into a fresh
containerd root (the cost a first run pays) instead of the cached one. Needs root, like the test tier.

    sudo .venv/bin/python bench/bench_realnode.py [--cold]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "realnode"))

from images import CONTAINERD_ROOT, IMPORTED, build_all, import_into  # noqa: E402
from realnode import RealNode, scratch_dir, tool_dir  # noqa: E402

EXAMPLE = REPO / "manifests/examples/color-codeword.yaml"
NAMESPACE = "rlrun-system"
RUN = "color-codeword"


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)
    return result


def on_the_node(cold: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    t = time.monotonic()
    root = scratch_dir("rlrun-bench-root-") if cold else CONTAINERD_ROOT
    imported = root / IMPORTED.name
    images = build_all(Path(tempfile.mkdtemp(prefix="rlrun-bench-build-")), imported)
    out["build_s"] = time.monotonic() - t
    for i in images:
        out[f"{i.target}_build_s"] = i.build_s
    work = scratch_dir("rlrun-bench-rn-")
    node = RealNode(work, root)
    try:
        node.start()
        out["node_start_s"] = node.timings["start_s"]
        out.update(import_into(node, images, imported))
        for i in images:  # known once streamed in (or from the marker of an earlier import)
            out[f"{i.target}_image_gib"] = i.size_bytes / 2**30
        helm = tool_dir("tools/helm/fetch.sh", "RLRUN_HELM")
        t = time.monotonic()
        node.run("env", f"KUBECONFIG={node.kubeconfig}", f"HOME={work}", str(helm), "install", "rlrun",
                 str(REPO / "helm/rlrun"), "-n", NAMESPACE, "--create-namespace", "--wait", timeout=330)  # fmt: skip
        out["helm_install_s"] = time.monotonic() - t
        sys.path.insert(0, str(REPO / "tests" / "realnode"))
        from conftest import volume_for

        volume_for(node, NAMESPACE, RUN)

        def status() -> dict:
            proc = node.kubectl("get", "rlrun", RUN, "-n", NAMESPACE, "-o", "json", check=False)
            return (json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}

        t = time.monotonic()
        node.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        _wait(lambda: (status().get("progress") or {}).get("step"), 900, "first step")
        out["apply_to_first_step_s"] = time.monotonic() - t
        _wait(lambda: status().get("phase") in ("Succeeded", "Failed"), 1800, "finished")
        out["apply_to_succeeded_s"] = time.monotonic() - t
        out["node_reward_mean_final"] = status()["progress"]["rewardMean"]
        assert status()["phase"] == "Succeeded", status()
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
        if cold:
            shutil.rmtree(root, ignore_errors=True)
    return out


def local() -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-local-") as cwd:
        progress = Path(cwd) / "outputs" / f"run_{RUN}" / "progress.json"
        t = time.monotonic()
        proc = subprocess.Popen([str(REPO / ".venv/bin/rlrun"), "local", str(EXAMPLE)], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

        def step() -> int:
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"rlrun local exited {proc.returncode} before its first step")
            try:
                return json.loads(progress.read_text()).get("step", 0)
            except (OSError, ValueError):
                return 0

        _wait(step, 900, "local first step")
        out["local_launch_to_first_step_s"] = time.monotonic() - t
        assert proc.wait(timeout=1800) == 0
        out["local_launch_to_done_s"] = time.monotonic() - t
        out["local_reward_mean_final"] = json.loads(progress.read_text())["rewardMean"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="import the images into a fresh containerd root")
    args = parser.parse_args()
    for part in (lambda: on_the_node(args.cold), local):
        for key, value in part().items():
            print(f"{key:32s} {value:10.2f}", flush=True)


if __name__ == "__main__":
    main()
