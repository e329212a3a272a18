"""Fixtures for the operator unit tests: RLRun objects with a uid, as if read from the API server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlrun.operator.api import RLRun

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def _load_run(path: Path, **meta: Any) -> RLRun:
    doc = yaml.safe_load(path.read_text())
    doc["metadata"] = {**doc["metadata"], "namespace": "team", "uid": "0b7c1c5e-uid", **meta}
    return RLRun.model_validate(doc)


def _make_run(spec: dict[str, Any] | None = None, name: str = "demo") -> RLRun:
    return RLRun.model_validate(
        {"metadata": {"name": name, "namespace": "team", "uid": "0b7c1c5e-uid"}, "spec": spec or {}}
    )


@pytest.fixture
def load_run() -> Callable[..., RLRun]:
    return _load_run


@pytest.fixture
def make_run() -> Callable[..., RLRun]:
    return _make_run


@pytest.fixture(params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def example(request: pytest.FixtureRequest) -> RLRun:
    return _load_run(request.param)
