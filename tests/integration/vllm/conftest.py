"""One run tree, one tiny model dir, two engines: real vLLM (CPU build) and the rlrun CPU engine.

Both servers are started once per test session (vLLM takes minutes to import and start) from the same
runtime config, so they serve byte-identical weights from `<run_dir>/model` and read the same asset tree.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from vllm_peer import START_TIMEOUT_S, Server, free_port, offline_env, require_vllm, start

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.models.tiny import BUILTIN_TINY, resolve_model

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


@dataclass
class Tree:
    config_path: Path
    config: RuntimeConfig
    model_dir: Path
    images: dict[str, str]  # colour name -> file:// URL under the asset root

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("vllm-outputs")
    config = RuntimeConfig.model_validate(
        {"runId": "contract", "assetRoot": str(root), "model": {"name": BUILTIN_TINY}}
    )
    path = root / "config.json"
    path.write_text(config.to_json())
    model_dir = Path(resolve_model(config.model.name, config.run_dir, seed=config.orchestrator.seed))
    images_dir = config.run_dir / "assets" / "images"
    images_dir.mkdir(parents=True)
    images = {}
    for name, rgb in COLOURS.items():
        Image.new("RGB", (32, 32), rgb).save(images_dir / f"{name}.png")
        images[name] = (images_dir / f"{name}.png").as_uri()
    return Tree(path, config, model_dir, images)


@pytest.fixture(scope="session")
def vllm_server(tree: Tree) -> Iterator[Server]:
    python = require_vllm()
    argv = [
        str(python), "-m", "rlrun.runtime.inference.vllm_server", "--config", str(tree.config_path),
        "--host", "127.0.0.1", "--port", str(free_port()),
        "--", "--max-model-len", "1024", "--max-num-seqs", "16", "--seed", "0",
    ]  # fmt: skip
    metrics = {"RLRUN_METRICS_PORT": str(free_port()), "RLRUN_METRICS_HOST": "127.0.0.1"}
    server = start("vllm", argv, tree.config_path.parent, offline_env(**metrics), START_TIMEOUT_S)
    server.metrics_url = f"http://127.0.0.1:{metrics['RLRUN_METRICS_PORT']}/metrics"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rlrun_server(tree: Tree) -> Iterator[Server]:
    argv = [
        sys.executable, "-m", "rlrun.runtime.inference", "--config", str(tree.config_path),
        "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
    ]  # fmt: skip
    server = start("rlrun", argv, tree.config_path.parent, offline_env(), 300)
    yield server
    server.stop()


@pytest.fixture(params=["rlrun", "vllm"])
def engine(request: pytest.FixtureRequest) -> Server:
    """Each contract test runs against both engines."""
    return request.getfixturevalue(f"{request.param}_server")
