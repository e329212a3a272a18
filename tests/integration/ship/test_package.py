"""The package as the images install it: a NON-editable install of the tracked sources.

The dev checkout is an editable install, which finds every folder on disk whether or not the package list
names it; the images run `uv pip install .`, which ships only the listed packages. A subpackage missing from
that list (rlrun.cmd once was) crash-loops the operator pod with ModuleNotFoundError while every editable
test passes. Here the wheel is built from a copy of the tracked files and installed into a fresh virtualenv
(without dependencies: the third-party packages come from the dev venv, appended AFTER the wheel's own
site-packages and without its editable finder), then run from a directory outside the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# The folders that install as (sub)packages of `rlrun` (pyproject's package-dir).
PACKAGE_ROOTS = {"rlrun": "rlrun", "operator": "rlrun.operator", "runtime": "rlrun.runtime"}


def _source_packages() -> set[str]:
    """Every package the checkout holds: each tracked folder with an __init__.py, under its import name."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    packages = set()
    for line in tracked.stdout.splitlines():
        path = Path(line)
        if path.name == "__init__.py" and path.parts[0] in PACKAGE_ROOTS:
            packages.add(".".join([PACKAGE_ROOTS[path.parts[0]], *path.parts[1:-1]]))
    return packages


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding a non-editable install of a copy of the tracked files; returns its python."""
    if shutil.which("uv") is None:
        pytest.fail("uv is required (make setup installs it)")
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for line in tracked.stdout.splitlines():
        if line.startswith("tests/"):
            continue
        (src / line).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / line, src / line)
    venv = tmp / "venv"
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(["uv", "pip", "install", "-q", "--no-deps", "--python", str(python), str(src)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dev venv's third-party packages, after the wheel's: a plain path line (not a site dir), so the
    # editable finder living there is never loaded.
    (Path(site) / "zz-dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_every_subpackage_is_installed_and_imports(installed: Path, tmp_path: Path) -> None:
    expected = _source_packages()
    assert {"rlrun.cmd", "rlrun.operator.render", "rlrun.runtime.trainer"} <= expected
    code = (
        "import importlib, json, sys\n"
        "names = json.loads(sys.argv[1]); bad = {}\n"
        "for n in names:\n"
        "    try:\n"
        "        m = importlib.import_module(n)\n"
        "        assert 'site-packages' in m.__file__, m.__file__\n"
        "    except Exception as e:\n"
        "        bad[n] = repr(e)\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run(
        [str(installed), "-c", code, json.dumps(sorted(expected))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout) == {}, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["operator", "--help"], ["version"]])
def test_rlrun_command_runs_from_the_installed_package(
    installed: Path, tmp_path: Path, args: list[str]
) -> None:
    rlrun = installed.parent / "rlrun"
    proc = subprocess.run([str(rlrun), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
