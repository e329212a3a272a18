"""A real tiny model and a real inference server on a loopback port (port 0), per test module."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aiohttp import web

from rlrun.runtime.inference.engine import Engine
from rlrun.runtime.inference.server import ServerSettings, create_app
from rlrun.runtime.models.tiny import build_tiny_vlm

torch.set_num_threads(1)


@dataclass
class Served:
    url: str
    app: web.Application
    engine: Engine
    settings: ServerSettings


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def run_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("outputs")
    run_dir = root / "run_test"
    (run_dir / "assets" / "images").mkdir(parents=True)
    return root, run_dir


@pytest.fixture(scope="module")
def served(tiny_model: Path, run_tree: tuple[Path, Path]) -> Iterator[Served]:
    """The real aiohttp app with a 50 ms batching window, served from a background event loop."""
    root, run_dir = run_tree
    engine = Engine(tiny_model)
    settings = ServerSettings(asset_root=root, run_dir=run_dir, model_name="tiny", batch_window_s=0.05)
    app = create_app(engine, settings)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    yield Served(f"http://127.0.0.1:{port}", app, engine, settings)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()
