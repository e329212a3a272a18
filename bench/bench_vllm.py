"""vLLM (CPU build) vs the rlrun CPU engine: completions/s on the same requests in one run; reload latency.

Both servers serve one tiny model dir (`builtin:tiny-qwen2-vl`) from one run tree, each as the pods run it
(`python -m rlrun.runtime.inference[.vllm_server]`). The workload is the colour-codeword rollout shape: R
chat requests with a `file://` image, n=8 choices, up to 8 tokens, temperature 1, C requests in flight.
Each engine gets the same requests (same seeds) after a warm-up; the engines run one after the other so
they do not compete for the cores. Reload latency: `POST /v1/load_weights` of a trainer export, as the
trainer calls it every step (vLLM: pause, in-place reload, encoder + prefix cache reset, resume).

    .venv/bin/python bench/bench_vllm.py [--requests 64] [--concurrency 16] [--reloads 5]

Needs tools/vllm/build.sh's virtualenv (or $RLRUN_VLLM_PYTHON).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vllm_peer import free_port, offline_env, start, vllm_python

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.models.tiny import BUILTIN_TINY, resolve_model

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def body(model: str, url: str, seed: int) -> dict:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is the codeword for this colour?"},
                ],
            }
        ],
        "n": 8,
        "max_tokens": 8,
        "temperature": 1.0,
        "seed": seed,
        "logprobs": True,
        "return_token_ids": True,
    }


async def throughput(url: str, bodies: list[dict], concurrency: int) -> tuple[float, int]:
    """(completions per second, completion tokens) for `bodies` with `concurrency` in flight."""
    limit = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(client: httpx.AsyncClient, b: dict) -> None:
        nonlocal tokens
        async with limit:
            response = await client.post(f"{url}/v1/chat/completions", json=b)
            response.raise_for_status()
            tokens += sum(len(c["token_ids"]) for c in response.json()["choices"])

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, b) for b in bodies))
        elapsed = time.perf_counter() - started
    return sum(b["n"] for b in bodies) / elapsed, tokens


def reload_seconds(url: str, weights: Path, reloads: int) -> list[float]:
    times = []
    for version in range(1, reloads + 1):
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/load_weights", json={"path": str(weights), "version": version}, timeout=600
        )
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    python = vllm_python()
    if python is None:
        raise SystemExit("no vLLM virtualenv: run tools/vllm/build.sh (or set RLRUN_VLLM_PYTHON)")
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-vllm-") as root:
        cfg = RuntimeConfig(run_id="bench", asset_root=root, model={"name": BUILTIN_TINY})
        config_path = Path(root) / "config.json"
        config_path.write_text(cfg.to_json())
        model_dir = Path(resolve_model(BUILTIN_TINY, cfg.run_dir, seed=0))
        images = cfg.run_dir / "assets" / "images"
        images.mkdir(parents=True)
        urls = []
        for i, rgb in enumerate(COLOURS):
            Image.new("RGB", (32, 32), rgb).save(images / f"{i}.png")
            urls.append((images / f"{i}.png").as_uri())
        from safetensors.torch import load_file

        from rlrun.runtime.trainer.weights import export_weights

        weights = export_weights(cfg.run_dir / "weights", 1, load_file(model_dir / "model.safetensors"))
        bodies = [body(BUILTIN_TINY, urls[i % len(urls)], seed=i) for i in range(args.requests)]
        warmup = [body(BUILTIN_TINY, u, seed=10_000 + i) for i, u in enumerate(urls)]
        engines = {
            "rlrun CPU engine": [sys.executable, "-m", "rlrun.runtime.inference", "--port", "0"],
            "vLLM 0.32.0 (CPU build)": [str(python), "-m", "rlrun.runtime.inference.vllm_server",
                                        "--port", str(free_port())],
        }  # fmt: skip
        rows = []
        for name, argv in engines.items():
            argv = [*argv[:3], "--config", str(config_path), "--host", "127.0.0.1", *argv[3:]]
            t0 = time.perf_counter()
            server = start(name.split()[0], argv, Path(root), offline_env(), 900)
            startup = time.perf_counter() - t0
            try:
                asyncio.run(throughput(server.url, warmup, args.concurrency))
                rate, tokens = asyncio.run(throughput(server.url, bodies, args.concurrency))
                reloads = reload_seconds(server.url, weights, args.reloads)
            finally:
                server.stop()
            rows.append((name, startup, rate, tokens, statistics.median(reloads), max(reloads)))
        load = os.getloadavg()
        print(f"{args.requests} requests x n=8, <=8 tokens, concurrency {args.concurrency}; "
              f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")  # fmt: skip
        print("| engine | start-up s | completions/s | completion tokens | reload median s | reload max s |")
        print("|---|---|---|---|---|---|")
        for name, startup, rate, tokens, median, worst in rows:
            print(f"| {name} | {startup:.0f} | {rate:.1f} | {tokens} | {median:.3f} | {worst:.3f} |")


if __name__ == "__main__":
    main()
