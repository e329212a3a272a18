"""The operator and runtime images, built from the project's Dockerfile with buildah, for the real node.

Exactly the user's build (`docker build --target <t> .`, README "Build and publish the images"); the only
difference is the base image argument: no registry is reachable here, so PYTHON_BASE is the Debian
bookworm image tools/realnode/build.sh makes with debootstrap. The images get the names the product uses
by default (the chart's `image.repository:appVersion`, `spec.images.runtime`), so the chart and the
example run unchanged and the kubelet finds them locally (IfNotPresent: nothing is pulled).

Disk is what limits this tier (the runtime image is ~6 GiB of CUDA torch), so each image exists at most
twice: as layers in buildah's store (the build cache: a code-only change adds a few MB on top of the
unchanged third-party layer) and unpacked in the node's containerd. No archive is written: the image is
streamed from buildah into `ctr import`, and the layer blobs containerd keeps after unpacking are dropped
(containerd's own `discard_unpacked_layers`, which its CRI applies to pulls but `ctr import` lacks).
An image is rebuilt and re-imported only when its inputs changed (a hash of the Dockerfile and the build
context, remembered per image in a marker next to the containerd root).

    python tests/realnode/images.py     # build (or reuse) both and print them
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realnode import CACHE, REPO

if TYPE_CHECKING:
    from realnode import RealNode

BASE_REF = "localhost/bookworm-python:12"  # = tools/realnode/build.sh BASE_REF
KEY_LABEL = "dev.rlrun.test.build-key"
"""The label a test build carries: its inputs' hash (context_key), so an unchanged image is not rebuilt."""
IMPORT_SECONDS_PER_GIB = 90.0
"""Bound on streaming one GiB from buildah into the node's containerd (about 25 s measured; a loaded disk)."""


@dataclass
class Image:
    target: str
    ref: str
    key: str
    """Hash of the inputs; the marker `<target>-<key>` says the node's containerd holds this build."""
    build_s: float
    size_bytes: int
    """The image's uncompressed size (its docker-archive), known once imported."""

    @property
    def marker(self) -> str:
        return f"{self.target}-{self.key}"


def default_refs() -> dict[str, str]:
    """Dockerfile target -> the image name the product uses by default."""
    from rlrun.operator.api import ImagesSpec

    values = yaml.safe_load((REPO / "helm/rlrun/values.yaml").read_text())["image"]
    chart = yaml.safe_load((REPO / "helm/rlrun/Chart.yaml").read_text())
    return {
        "operator": f"{values['repository']}:{values['tag'] or chart['appVersion']}",
        "runtime": ImagesSpec().runtime,
    }


def base_archive() -> Path:
    """The debootstrap base image (only that part of tools/realnode/build.sh is built here)."""
    if tools := os.environ.get("RLRUN_REALNODE_TOOLS"):
        return Path(tools) / "images" / "bookworm.tar"
    out = subprocess.run(
        [str(REPO / "tools/realnode/build.sh"), "base"], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "images" / "bookworm.tar"


def _buildah(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(["buildah", *args], capture_output=capture, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:3])}... failed:\n{(proc.stderr or '')[-4000:]}")
    return proc.stdout or ""


def _ensure_base() -> None:
    present = subprocess.run(["buildah", "inspect", "--type", "image", BASE_REF], capture_output=True)
    if present.returncode != 0:
        _buildah("pull", "-q", f"docker-archive:{base_archive()}")


def context_key(target: str) -> str:
    """A hash of everything the image is built from: the Dockerfile, the tracked files of the build
    context (.dockerignore's allow-list), the target and the base image archive."""
    h = hashlib.sha256(f"{target}\n".encode())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    # README.md is in the context too (the package's long description) but changes nothing the pods run:
    # leaving it out spares a multi-GiB rebuild for every documentation edit.
    allowed = ("pyproject.toml", "setup.py", "Dockerfile", ".dockerignore")
    for name in sorted(tracked.decode().split("\0")):
        if name and (name in allowed or name.split("/")[0] in ("rlrun", "operator", "runtime")):
            path = REPO / name
            if path.is_file():
                h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    base = base_archive()
    h.update(f"{base.stat().st_size}:{base.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build(target: str, ref: str, log: Path, imported: Path) -> Image:
    """Build `target` unless the node's containerd holds an image of the same inputs already (its marker
    in `imported`): then nothing is built."""
    key = context_key(target)
    if (marker := imported / f"{target}-{key}").exists():
        return Image(target, ref, key, 0.0, int(marker.read_text() or 0))
    if _built_key(ref) == key:  # built, not imported yet
        return Image(target, ref, key, 0.0, 0)
    _ensure_base()
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["buildah", "bud", "--layers", "--isolation", "chroot", "--network", "host",
             "--build-arg", f"PYTHON_BASE={BASE_REF}", "--label", f"{KEY_LABEL}={key}", "--target", target,
             "-t", ref, "."],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"building --target {target} failed; see {log}:\n{log.read_text()[-4000:]}")
    build_s = time.monotonic() - started
    _prune_dead_branches()
    return Image(target, ref, key, build_s, 0)


def _built_key(ref: str) -> str:
    proc = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", f'{{{{index .OCIv1.Config.Labels "{KEY_LABEL}"}}}}', ref],
        capture_output=True, text=True,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _prune_dead_branches() -> None:
    """Remove the images of earlier builds (the previous code layer, a third-party layer that a
    pyproject.toml change replaced: multi-GiB each, on a disk that holds one). A `--prune` pass removes
    untagged images without children, so each pass strips one step off every dead branch; the current
    build's cache is a chain ending in a tagged image and is never touched."""
    for _ in range(64):
        if not _buildah("rmi", "--prune").strip():
            return


def build_all(log_dir: Path, imported: Path) -> list[Image]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return [build(t, ref, log_dir / f"build-{t}.log", imported) for t, ref in default_refs().items()]


def import_into(node: RealNode, images: list[Image], imported: Path) -> dict[str, float]:
    """Stream every image the node lacks from buildah into its containerd, drop the unpacked layers'
    blobs, and mark it imported. Returns the seconds each import took."""
    imported.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for image in images:
        if (imported / image.marker).exists():
            continue
        started = time.monotonic()
        # The previous build of this name first, synchronously garbage-collected: containerd keeps its
        # snapshots (GiBs) until some later GC otherwise, and the new one would be unpacked beside them.
        node.run(*node.ctr_argv("images", "rm", "--sync", image.ref), check=False)
        with tempfile.TemporaryFile() as push_err, tempfile.TemporaryFile() as ctr_err:
            push = subprocess.Popen(
                ["buildah", "push", "--quiet", image.ref, f"docker-archive:/dev/stdout:{image.ref}"],
                stdout=subprocess.PIPE, stderr=push_err,
            )  # fmt: skip
            ctr = subprocess.Popen(
                node.enter(*node.ctr_argv("images", "import", "-")), stdin=subprocess.PIPE, stdout=ctr_err,
                stderr=ctr_err,
            )  # fmt: skip
            assert push.stdout is not None and ctr.stdin is not None
            image.size_bytes = 0
            try:  # relayed, to measure the size; bounded by IMPORT_SECONDS_PER_GIB of what has passed
                while chunk := push.stdout.read(1 << 20):
                    ctr.stdin.write(chunk)
                    image.size_bytes += len(chunk)
                    if time.monotonic() - started > 60 + IMPORT_SECONDS_PER_GIB * image.size_bytes / 2**30:
                        raise TimeoutError(
                            f"importing {image.ref}: {image.size_bytes} bytes in {time.monotonic() - started:.0f}s"
                        )
            finally:
                ctr.stdin.close()
                for proc in (push, ctr):
                    try:
                        proc.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            if push.returncode != 0 or ctr.returncode != 0:
                err = b"".join(f.seek(0) or f.read() for f in (push_err, ctr_err)).decode(errors="replace")
                raise RuntimeError(f"importing {image.ref} into the node failed:\n{err[-4000:]}")
        _discard_layer_blobs(node, image.ref)
        seconds[f"{image.target}_import_s"] = time.monotonic() - started
        for stale in imported.glob(f"{image.target}-*"):
            stale.unlink()
        (imported / image.marker).write_text(str(image.size_bytes))
    _drop_stale_records(node)
    return seconds


def _drop_stale_records(node: RealNode) -> None:
    """Remove the image records that only keep replaced images alive, with a synchronous GC: the kubelet's
    CRI names every image it sees a second time, by its ID (`sha256:<config>`), and that record outlived
    the tag it came with (each replaced runtime image kept its 6 GB of snapshots)."""
    rows = [line.split() for line in node.run(*node.ctr_argv("images", "ls")).stdout.splitlines()[1:]]
    tagged = {row[2] for row in rows if not row[0].startswith("sha256:")}
    stale = [row[0] for row in rows if row[0].startswith("sha256:") and row[2] not in tagged]
    if stale:
        node.run(*node.ctr_argv("images", "rm", "--sync", *stale))


def _discard_layer_blobs(node: RealNode, ref: str) -> None:
    """Remove the layer blobs of `ref` (kept by the import after unpacking into snapshots, which is all a
    container needs): the same as containerd's `discard_unpacked_layers`, halving the image's disk use."""
    listed = node.run(*node.ctr_argv("images", "ls", f"name=={ref}")).stdout.splitlines()
    digest = next(f for f in listed[1].split() if f.startswith("sha256:"))
    manifest = json.loads(node.run(*node.ctr_argv("content", "get", digest)).stdout)
    if "manifests" in manifest:  # an index: the one platform manifest the import unpacked
        digest = manifest["manifests"][0]["digest"]
        manifest = json.loads(node.run(*node.ctr_argv("content", "get", digest)).stdout)
    layers = [layer["digest"] for layer in manifest["layers"]]
    node.run(*node.ctr_argv("content", "rm", *layers))


CONTAINERD_ROOT = CACHE / "realnode" / "containerd"
"""The node's containerd root (content, snapshots), kept between sessions: one node at a time uses it."""
IMPORTED = CONTAINERD_ROOT / "rlrun.imported"
"""One marker per image (by its inputs) held in CONTAINERD_ROOT; inside it, so wiping the root forgets them."""

if __name__ == "__main__":
    for image in build_all(Path(os.environ.get("TMPDIR", "/tmp")) / "rlrun-realnode-build", IMPORTED):
        print(f"{image.target}: {image.ref} build {image.build_s:.0f}s")
