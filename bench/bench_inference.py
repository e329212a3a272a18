"""CPU inference engine: concurrent chat requests (micro-batched) vs the same requests one at a time.

    .venv/bin/python bench/inference_batching.py

Baseline = sequential requests against the same server in the same run. Workload = the colour task's
shape: 8 requests (examples) x n=8 completions x 2 tokens, one 32x32 image each, tiny model.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from aiohttp import web
from PIL import Image

from rlrun.runtime.inference.engine import Engine
from rlrun.runtime.inference.server import ServerSettings, create_app
from rlrun.runtime.models.tiny import build_tiny_vlm

REQUESTS, N, ROUNDS = 8, 8, 5


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="rlrun-bench-"))
    run_dir = root / "run_bench"
    images = run_dir / "assets" / "images"
    images.mkdir(parents=True)
    model = build_tiny_vlm(run_dir / "model")
    urls = []
    for i in range(REQUESTS):
        path = images / f"{i}.png"
        Image.new("RGB", (32, 32), (i * 30, 255 - i * 30, 90)).save(path)
        urls.append(path.as_uri())
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = web.AppRunner(create_app(Engine(model), ServerSettings(root, run_dir, "tiny")), access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    base = f"http://127.0.0.1:{asyncio.run_coroutine_threadsafe(start(), loop).result(60)}"

    def call(i: int) -> None:
        content = [
            {"type": "image_url", "image_url": {"url": urls[i]}},
            {"type": "text", "text": "Codeword?"},
        ]
        body = {"messages": [{"role": "user", "content": content}], "n": N, "max_tokens": 2, "seed": i}
        httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120).raise_for_status()

    call(0)  # warm-up
    sequential, concurrent = [], []
    with ThreadPoolExecutor(REQUESTS) as pool:
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for i in range(REQUESTS):
                call(i)
            sequential.append(time.perf_counter() - t)
            t = time.perf_counter()
            list(pool.map(call, range(REQUESTS)))
            concurrent.append(time.perf_counter() - t)
    stats = httpx.get(f"{base}/v1/stats", timeout=10).json()
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
    seq, con = min(sequential), min(concurrent)
    rows = REQUESTS * N
    print(f"{REQUESTS} requests x n={N} x 2 tokens (best of {ROUNDS})")
    print(f"  baseline  sequential: {seq * 1000:7.1f} ms  ({rows / seq:6.0f} completions/s)")
    print(
        f"  batched   concurrent: {con * 1000:7.1f} ms  ({rows / con:6.0f} completions/s)  x{seq / con:.1f}"
    )
    print(f"  mean requests per batch over the run: {stats['mean_batch_requests']:.2f}")


if __name__ == "__main__":
    main()
