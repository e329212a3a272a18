import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from operator_harness import install_crd


@pytest.fixture(scope="module")
def crd(cluster):
    install_crd(cluster)
    return cluster
