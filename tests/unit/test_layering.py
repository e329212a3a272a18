"""Dependency direction (ARCHITECTURE.md): checked on the source, so a violation fails CI, not review.

- the runtime never imports the operator;
- the operator imports only `rlrun.runtime.config` from the runtime (its image has no torch);
- runtime roles (orchestrator, trainer, inference, envs) never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROLES = ("orchestrator", "trainer", "inference", "envs")


def _imports(folder: str, package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import in `folder`, relative imports resolved."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO / folder).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
            parts.append("__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(REPO)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts[: -node.level]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found += [(str(path.relative_to(REPO)), module)]
    return found


def test_runtime_never_imports_operator():
    bad = [(f, m) for f, m in _imports("runtime", "rlrun.runtime") if m.startswith("rlrun.operator")]
    assert not bad, f"runtime imports the operator: {bad}"


def test_operator_imports_only_runtime_config():
    bad = [
        (f, m)
        for f, m in _imports("operator", "rlrun.operator")
        if m.startswith("rlrun.runtime") and m != "rlrun.runtime.config"
    ]
    assert not bad, f"operator imports runtime modules other than rlrun.runtime.config: {bad}"


def test_operator_never_imports_torch():
    bad = [
        (f, m)
        for f, m in _imports("operator", "rlrun.operator")
        if m.split(".")[0] in {"torch", "transformers"}
    ]
    assert not bad, f"operator imports ML libraries: {bad}"


def test_runtime_roles_do_not_import_each_other():
    bad = []
    for f, m in _imports("runtime", "rlrun.runtime"):
        role = f.split("/")[1] if f.count("/") >= 2 else None
        for other in ROLES:
            if role in ROLES and other != role and m.startswith(f"rlrun.runtime.{other}"):
                bad.append((f, m))
    assert not bad, f"roles import each other: {bad}"


def test_client_imports_no_runtime_but_its_config_and_no_ml_library():
    """`rlrun.client` runs in a platform's process: the operator's rule (runtime.config only, no torch)."""
    bad = [
        (f, m)
        for f, m in _imports("rlrun/client", "rlrun.client")
        if (m.startswith("rlrun.runtime") and m != "rlrun.runtime.config")
        or m.split(".")[0] in {"torch", "transformers"}
    ]
    assert not bad, f"rlrun.client imports the runtime or ML libraries: {bad}"
