"""A real inference server and a real env-worker (both aiohttp apps on loopback port 0) over a tiny model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aiohttp import web

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.envs.server import create_app as create_env_app
from rlrun.runtime.envs.server import worker_factory
from rlrun.runtime.inference.engine import Engine
from rlrun.runtime.inference.server import ServerSettings
from rlrun.runtime.inference.server import create_app as create_inference_app
from rlrun.runtime.models.tiny import build_tiny_vlm

torch.set_num_threads(1)


class LoopThread:
    """An event loop in a daemon thread serving aiohttp apps on free loopback ports."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def serve(self, app: web.Application) -> str:
        async def start() -> int:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.runners.append(runner)
            return runner.addresses[0][1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=60)
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for runner in reversed(self.runners):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Stack:
    env_url: str
    inference_url: str
    config: RuntimeConfig
    engine: Engine

    @property
    def images_dir(self) -> Path:
        return self.config.run_dir / "assets" / "images"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model")


def _stack(tmp: Path, tiny_model: Path, env_id: str, args: dict) -> Iterator[Stack]:
    config = RuntimeConfig.model_validate(
        {
            "runId": "envtest",
            "assetRoot": str(tmp),
            "model": {"name": str(tiny_model)},
            "envWorkers": {"environment": {"id": env_id, "args": args}},
        }
    )
    engine = Engine(tiny_model)
    loops = LoopThread()
    try:
        settings = ServerSettings(asset_root=tmp, run_dir=config.run_dir, model_name="tiny")
        inference_url = loops.serve(create_inference_app(engine, settings))
        env_url = loops.serve(create_env_app(worker_factory(config, [inference_url])))
        yield Stack(env_url, inference_url, config, engine)
    finally:
        loops.close()


@pytest.fixture(scope="module")
def color_stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory.mktemp("color"), tiny_model, "color-codeword", {"num_colours": 4})


@pytest.fixture(scope="module")
def text_stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory.mktemp("text"), tiny_model, "text-reverse", {"num_words": 2})


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    loops = LoopThread()
    yield loops
    loops.close()
