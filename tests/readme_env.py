"""The README's "Write your own environment" package, as written, for the tests that build and run it
(tests/e2e/test_byo_environment.py on local processes, tests/realnode on a real node)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_files() -> dict[str, str]:
    """`path`: + the code block after it, for every file the README's section shows."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Write your own environment\n")
    section = text[start : text.index("\n## ", start + 1)]
    return dict(re.findall(r"^`([\w./-]+)`:\n\n```\w*\n(.*?)```", section, re.S | re.M))


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def build_wheel(project: Path, out: Path) -> Path:
    """`uv build` of `project` into `out`, offline with this virtualenv's setuptools; returns the wheel."""
    subprocess.run(
        ["uv", "--offline", "--no-config", "build", "--wheel", "--no-build-isolation", "--python", sys.executable,
         str(project), "-o", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel
