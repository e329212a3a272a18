"""The real-node tier: one real single-node Kubernetes per test session (realnode.py, node.sh), with the
operator and runtime images built from the project's Dockerfile (images.py) imported into its containerd.

Run it with `make test-realnode` (root: namespaces, mounts and cgroups need it). Tests here are marked
`realnode`; `make test` runs them as their own step after the rest of the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from images import CONTAINERD_ROOT, IMPORTED, build_all, import_into
from realnode import CACHE, RealNode, scratch_dir

RUN_UID = 1000  # the pods' uid and gid (operator/names.py RUN_AS_USER)
TIMINGS = CACHE / "realnode" / "last-session-timings.json"


def import_seconds(node: RealNode) -> dict[str, float]:
    """Per-step start-up figures node.sh logged ("imported X (1.2s)", "apiserver ready (3.1s)")."""
    out = {}
    for line in node.log.read_text().splitlines():
        if "(" in line and line.endswith("s)"):
            what = line.split(" ", 1)[1].rsplit(" (", 1)[0].replace(" ", "_")
            out[what] = float(line.rsplit("(", 1)[1].rstrip("s)"))
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def realnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    if os.geteuid() != 0:
        pytest.fail("the real-node tier needs root (network/mount/PID namespaces, cgroups)")
    images = build_all(tmp_path_factory.mktemp("image-builds"), IMPORTED)
    work = scratch_dir("rlrun-rn-")
    node = RealNode(work, CONTAINERD_ROOT)
    node.start()
    try:
        node.timings.update(import_into(node, images, IMPORTED))
        node.timings.update({f"{i.target}_image_bytes": i.size_bytes for i in images})
        node.timings.update({f"{i.target}_build_s": i.build_s for i in images if i.build_s})
        yield node
    finally:
        if node.log.is_file():
            node.timings.update(import_seconds(node))
        node.stop()
        TIMINGS.write_text(json.dumps(node.timings, indent=1))  # the figures of the last session
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def kubectl_json(realnode: RealNode) -> Callable[..., dict[str, Any] | None]:
    def get(*args: str) -> dict[str, Any] | None:
        proc = realnode.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    return get


def volume_for(node: RealNode, namespace: str, run: str, owner: int = RUN_UID, mode: int = 0o755) -> Path:
    """A pre-made hostPath PersistentVolume pre-bound (claimRef) to the claim the operator creates for
    `run`, its directory owned by `owner`; returns the directory (readable from the host)."""
    path = node.workdir / "volumes" / f"{namespace}-{run}"
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, owner, owner)
    path.chmod(mode)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{namespace}-{run}"},
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": f"{run}-assets"},
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(pv))
    return path
