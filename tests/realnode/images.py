"""The operator and runtime images, built from the project's Dockerfile with buildah, for the real node.

Exactly the user's build (`docker build --target <t> .`, README "Build and publish the images"); the only
difference is the base image argument: no registry is reachable here, so PYTHON_BASE is the Debian
bookworm image tools/realnode/build.sh makes with debootstrap. The images get the names the product uses
by default (the chart's `image.repository:appVersion`, `spec.images.runtime`), so the chart and the
example run unchanged and the kubelet finds them locally (IfNotPresent: nothing is pulled).

An image is rebuilt only when its inputs changed (a hash of the Dockerfile and the build context), then
exported as a docker-archive that the node imports once; buildah's layer cache and the Dockerfile's uv
cache mount keep a code-only change from reinstalling torch.

    python tests/realnode/images.py     # build (or reuse) both and print the archives
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realnode import CACHE, REPO

BASE_REF = "localhost/bookworm-python:12"  # = tools/realnode/build.sh BASE_REF
ARCHIVES = CACHE / "realnode" / "images"


@dataclass(frozen=True)
class Image:
    target: str
    ref: str
    archive: Path
    build_s: float
    export_s: float
    size_bytes: int


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
    """Build and export `target` unless an image of the same inputs is in the node's containerd already
    (a marker in `imported`): then nothing is built and `archive` does not exist."""
    key = context_key(target)
    archive = ARCHIVES / f"{target}-{key}.tar"
    if (imported / archive.name).exists():
        return Image(target, ref, archive, 0.0, 0.0, int((imported / archive.name).read_text() or 0))
    if archive.exists():  # built and exported, not imported yet
        return Image(target, ref, archive, 0.0, 0.0, archive.stat().st_size)
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    for old in ARCHIVES.glob(f"{target}-*"):  # stale exports: free their space before building
        old.unlink()
    _ensure_base()
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["buildah", "bud", "--layers", "--isolation", "chroot", "--network", "host",
             "--build-arg", f"PYTHON_BASE={BASE_REF}", "--target", target, "-t", ref, "."],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"building --target {target} failed; see {log}:\n{log.read_text()[-4000:]}")
    build_s = time.monotonic() - started
    started = time.monotonic()
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _buildah("push", "--quiet", ref, f"docker-archive:{tmp}:{ref}")
    tmp.rename(archive)
    export_s = time.monotonic() - started
    if archive.stat().st_size > 2**30:
        # A multi-GiB image (CUDA torch) is kept once, in the node's containerd: this machine's disk
        # cannot hold it three times. Rebuilds reuse the downloads in the Dockerfile's cache mount.
        _buildah("rmi", ref)
        subprocess.run(["buildah", "rmi", "--prune"], capture_output=True)
    return Image(target, ref, archive, build_s, export_s, archive.stat().st_size)


def build_all(log_dir: Path, imported: Path) -> list[Image]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return [build(t, ref, log_dir / f"build-{t}.log", imported) for t, ref in default_refs().items()]


def mark_imported(images: list[Image], imported: Path) -> None:
    """After the node imported them: remember each image by its inputs, and drop the archives."""
    imported.mkdir(parents=True, exist_ok=True)
    for image in images:
        if image.archive.exists():
            (imported / image.archive.name).write_text(str(image.size_bytes))
            image.archive.unlink()


IMPORTED = CACHE / "realnode" / "containerd.imported"
"""One marker per image (by its inputs) already in the node's containerd root, CACHE/realnode/containerd."""

if __name__ == "__main__":
    for image in build_all(Path(os.environ.get("TMPDIR", "/tmp")) / "rlrun-realnode-build", IMPORTED):
        print(
            f"{image.target}: {image.ref} {image.size_bytes / 2**30:.2f} GiB, build {image.build_s:.0f}s, "
            f"export {image.export_s:.0f}s -> {image.archive}"
        )
