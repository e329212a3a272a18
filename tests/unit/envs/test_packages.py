"""envWorkers.packages: a wheel from a wheels dir (the air-gapped path) installed into a virtualenv cached
on the run volume that also sees the runtime; reused by digest; credentials never reach argv or errors.

The wheel is built here by `uv build` from a package written by the test (offline, this venv's setuptools);
the e2e run of `rlrun local` with packages is tests/e2e/test_byo_environment.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrun import pod_contract
from rlrun.runtime.config import PackagesConfig
from rlrun.runtime.envs.packages import DONE, InstallFailed, ensure_venv, netrc_text, pip_command, venv_dir

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-env"
version = "0.3.0"

[project.entry-points."rlrun.environments"]
tiny-env = "tiny_env:make"
"""
MODULE = """
from rlrun.runtime.envs.builtin.text_reverse import TextReverse


def make(num_words: int = 2):
    return TextReverse(num_words=num_words, num_examples=5)
"""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "tiny_env.py").write_text(MODULE)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        ["uv", "--offline", "--no-config", "build", "--wheel", "--no-build-isolation", "--python", sys.executable,
         str(src), "-o", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def test_packages_from_a_wheels_dir_install_once_into_a_venv_that_sees_the_runtime(wheels, tmp_path):
    packages = PackagesConfig(requirements=["tiny-env==0.3.0"], wheels_dir=str(wheels))
    venv = ensure_venv(tmp_path / "run_x", packages)
    assert venv == venv_dir(tmp_path / "run_x", packages) and (venv / DONE).is_file()
    assert not list(venv.parent.glob(".*.tmp-*"))  # no half-built venv left beside it
    probe = "from rlrun.runtime.envs.registry import make_environment as m; e = m('tiny-env'); print(e.id, len(e))"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "text-reverse 5", out.stderr[-2000:]
    marker = (venv / DONE).stat().st_mtime_ns
    assert ensure_venv(tmp_path / "run_x", packages) == venv and (venv / DONE).stat().st_mtime_ns == marker
    other = PackagesConfig(requirements=["tiny-env"], wheels_dir=str(wheels))
    assert venv_dir(tmp_path / "run_x", other) != venv  # another list, another venv


def test_an_install_works_where_the_images_uv_cache_cannot_be_created(wheels, tmp_path, monkeypatch):
    """The runtime image sets UV_CACHE_DIR=/root/.cache/uv for its build; its pods run as uid 1000, who
    cannot create it. A cache path under a file reproduces that for any user (even root)."""
    monkeypatch.setenv("UV_CACHE_DIR", "/dev/null/uv")
    packages = PackagesConfig(requirements=["tiny-env==0.3.0"], wheels_dir=str(wheels))
    venv = ensure_venv(tmp_path / "run_z", packages)
    assert (venv / DONE).is_file()


def test_a_failed_install_names_the_package_and_keeps_the_credentials_out(tmp_path, monkeypatch):
    monkeypatch.setenv(pod_contract.PACKAGE_INDEX_USERNAME_ENV, "robot")
    monkeypatch.setenv(pod_contract.PACKAGE_INDEX_PASSWORD_ENV, "s3cr3t-t0ken")
    packages = PackagesConfig(requirements=["no-such-env==9"], index_url="http://127.0.0.1:9/simple")
    with pytest.raises(InstallFailed) as err:
        ensure_venv(tmp_path / "run_y", packages)
    assert "installing ['no-such-env==9'] failed" in str(err.value) and "s3cr3t" not in str(err.value)
    assert not (venv_dir(tmp_path / "run_y", packages)).exists()  # nothing half-built is ever used
    assert not list((tmp_path / "run_y" / "envs").glob(".*.tmp-*"))


def test_pip_command_and_netrc_are_pure_and_carry_no_secret():
    python = Path("/v/bin/python")
    air_gapped = pip_command(
        "uv", python, PackagesConfig(requirements=["a"], wheels_dir="/data/wheels"), Path("/c")
    )
    assert air_gapped[-4:] == ["--no-index", "--find-links", "/data/wheels", "a"]
    indexed = pip_command(
        "uv", python, PackagesConfig(requirements=["a"], index_url="https://pkgs.example/simple"), Path("/c")
    )
    assert indexed[-3:] == ["--index-url", "https://pkgs.example/simple", "a"] and "--no-index" not in indexed
    env = {pod_contract.PACKAGE_INDEX_USERNAME_ENV: "u", pod_contract.PACKAGE_INDEX_PASSWORD_ENV: "p"}
    assert (
        netrc_text("https://pkgs.example:8443/simple", env) == "machine pkgs.example\nlogin u\npassword p\n"
    )
    assert netrc_text("https://pkgs.example/simple", {}) is None


def test_wheels_dir_must_be_absolute():
    with pytest.raises(ValueError, match=r"packages\.wheelsDir must be an absolute path"):
        PackagesConfig(wheels_dir="wheels")


def test_an_install_that_outlasts_its_configured_bound_fails_naming_the_field(tmp_path):
    """A real index on loopback that accepts connections and never answers (a hung mirror): the install
    fails after `installTimeoutSeconds`, not after a fixed half hour, and the error says which field."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # connections complete in the kernel backlog; nothing ever reads or answers
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/simple"
        packages = PackagesConfig(requirements=["slow-env==1"], index_url=url, install_timeout_seconds=2)
        start = time.monotonic()
        with pytest.raises(InstallFailed, match=r"envWorkers\.packages\.installTimeoutSeconds \(2s\)"):
            ensure_venv(tmp_path / "run_z", packages)
        assert time.monotonic() - start < 60
    finally:
        hung.close()
    assert not (venv_dir(tmp_path / "run_z", packages) / DONE).exists()
