"""A user's environment package reaches the env-workers without a new image: installed at start into a
virtualenv cached on the run volume, then the env-worker re-executes itself in it.

The virtualenv sees the runtime's own packages (a `.pth` file naming the runtime's site-packages) and uv
(shipped in the runtime image; `python -m venv` and pip are not there: the runtime's virtualenv is uv-made,
and Debian's python3 has no ensurepip) installs with the runtime's exact versions as constraints: a user package that needs another torch fails
to install, naming the conflict, instead of shadowing the runtime's. It is named by a digest of what it
holds (requirements, index, wheels dir), so replicas and restarts reuse it, and a changed list gets a new
one. It is built under a temporary name and renamed into place once complete (an interrupted install is
never used; a lock serialises replicas that start together). Credentials for a private index come from
the environment (a Secret in the pod) through a temporary netrc file: they never appear in a URL, argv or
a log line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from importlib.metadata import distributions
from pathlib import Path
from urllib.parse import urlsplit

from rlrun import pod_contract
from rlrun.runtime.config import PackagesConfig

DONE = "DONE"
ACTIVE_ENV = "RLRUN_ENV_PACKAGES_VENV"
"""Set in the re-executed env-worker: the virtualenv it runs in (so it never re-executes twice)."""


class InstallFailed(RuntimeError):
    """The packages could not be installed (the installer's output tail, with no credential in it)."""


def venv_dir(run_dir: Path, packages: PackagesConfig) -> Path:
    key = json.dumps([packages.requirements, packages.index_url, packages.wheels_dir, sys.version])
    return run_dir / "envs" / f"venv-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def pip_command(uv: str, python: Path, packages: PackagesConfig, constraints: Path) -> list[str]:
    """The install command (pure): the index if given, else the wheels dir alone when there is one. No
    cache: the pod's user cannot write the image's, and the venv on the volume is the cache."""
    argv = [uv, "pip", "install", "--no-cache", "--no-progress", "--python", str(python),
            "--constraint", str(constraints)]  # fmt: skip
    if packages.index_url:
        argv += ["--index-url", packages.index_url]
    elif packages.wheels_dir:
        argv += ["--no-index"]
    if packages.wheels_dir:
        argv += ["--find-links", packages.wheels_dir]
    return [*argv, *packages.requirements]


def netrc_text(index_url: str, environ: Mapping[str, str]) -> str | None:
    """A netrc entry for the index host from the credential variables, or None when there are none."""
    user = environ.get(pod_contract.PACKAGE_INDEX_USERNAME_ENV)
    password = environ.get(pod_contract.PACKAGE_INDEX_PASSWORD_ENV)
    if not user and not password:
        return None
    host = urlsplit(index_url).hostname or ""
    return f"machine {host}\nlogin {user or ''}\npassword {password or ''}\n"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runtime_pins() -> str:
    return "".join(f"{d.metadata['Name']}=={d.version}\n" for d in distributions() if d.metadata["Name"])


def ensure_venv(run_dir: Path, packages: PackagesConfig, environ: Mapping[str, str] = os.environ) -> Path:
    """The virtualenv holding `packages` (built once per digest); raises InstallFailed."""
    target = venv_dir(run_dir, packages)
    if (target / DONE).is_file():
        return target
    with _locked(target.with_name(f".{target.name}.lock")):
        if (target / DONE).is_file():  # another replica built it while this one waited
            return target
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # never complete without DONE: not worth keeping
        try:
            _build(tmp, packages, environ)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def uv_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The installer's environment (pure): no index credentials (they go through a netrc file) and no
    cache. The image sets UV_CACHE_DIR for its own build, under /root, which the pods' uid 1000 cannot
    create: with it, `uv venv` failed at once in every pod; the venv on the volume is the cache anyway."""
    hidden = (
        pod_contract.PACKAGE_INDEX_USERNAME_ENV,
        pod_contract.PACKAGE_INDEX_PASSWORD_ENV,
        "UV_CACHE_DIR",
    )
    return {**{k: v for k, v in environ.items() if k not in hidden}, "UV_NO_CACHE": "1"}


def _build(venv: Path, packages: PackagesConfig, environ: Mapping[str, str]) -> None:
    uv = shutil.which("uv")
    if uv is None:
        raise InstallFailed(
            "environment packages are installed with uv, which is not on PATH (pip install uv)"
        )
    env = uv_environ(environ)
    made = subprocess.run([uv, "venv", "--no-config", "-q", "--python", sys.executable, str(venv)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if made.returncode != 0:
        raise InstallFailed(
            f"creating the virtualenv for {packages.requirements} at {venv} failed (uv exit {made.returncode}): "
            f"{(made.stdout + made.stderr)[-2000:].strip()}"
        )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    runtime_sites = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    # addsitedir, not a bare path: the runtime's own .pth files (an editable install) must be processed too.
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in runtime_sites)
    Path(purelib, "_rlrun_runtime.pth").write_text(lines)
    constraints = venv / "runtime-constraints.txt"
    constraints.write_text(_runtime_pins())
    with tempfile.TemporaryDirectory(prefix="rlrun-netrc-") as private:
        entry = netrc_text(packages.index_url, environ) if packages.index_url else None
        if entry is not None:
            netrc = Path(private) / "netrc"
            netrc.touch(mode=0o600)
            netrc.write_text(entry)
            env["NETRC"] = str(netrc)
        try:
            proc = subprocess.run(
                pip_command(uv, python, packages, constraints), env=env, capture_output=True, text=True,
                timeout=packages.install_timeout_seconds,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            parts = (
                p.decode(errors="replace") if isinstance(p, bytes) else p for p in (err.stdout, err.stderr)
            )
            tail = "".join(p for p in parts if p)[-2000:].strip()
            raise InstallFailed(
                f"installing {packages.requirements} took longer than envWorkers.packages.installTimeoutSeconds "
                f"({packages.install_timeout_seconds:g}s); raise it or check the index: {tail or 'no output'}"
            ) from None
    if proc.returncode != 0:
        raise InstallFailed(
            f"installing {packages.requirements} failed (uv exit {proc.returncode}): "
            f"{(proc.stdout + proc.stderr)[-2000:].strip()}"
        )
    (venv / DONE).write_text("\n".join(packages.requirements) + "\n")


def reexec_in_venv(run_dir: Path, packages: PackagesConfig, argv: list[str]) -> None:
    """Install `packages` if needed and replace this process by the env-worker in their virtualenv;
    returns without doing anything when there are none or this process already runs there."""
    if not packages.requirements or os.environ.get(ACTIVE_ENV):
        return
    venv = ensure_venv(run_dir, packages)
    python = venv / "bin" / "python"
    os.environ[ACTIVE_ENV] = str(venv)
    for name in (pod_contract.PACKAGE_INDEX_USERNAME_ENV, pod_contract.PACKAGE_INDEX_PASSWORD_ENV):
        os.environ.pop(name, None)  # the environment's code never needs the index credentials
    os.execv(python, [str(python), "-m", "rlrun.runtime.envs", *argv])
