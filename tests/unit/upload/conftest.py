"""Fixtures for the upload unit tests; helpers live in upload_helpers.py (importable: this folder is
put on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def asset_root(tmp_path: Path) -> Path:
    """An asset root holding run_t/assets/images/."""
    (tmp_path / "outputs" / "run_t" / "assets" / "images").mkdir(parents=True)
    return tmp_path / "outputs"
