"""The orchestrator role (`python -m rlrun.runtime.orchestrator` or `rlrun-orchestrator`).

Env-worker and inference base URLs come from flags or $RLRUN_ENV_WORKER_URLS / $RLRUN_INFERENCE_URLS
(comma-separated; Service URLs in the cluster); the status endpoint listens on --status-port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.memory import release_memory
from rlrun.runtime.orchestrator.progress import ProgressPublisher
from rlrun.runtime.orchestrator.state import load_state

log = logging.getLogger("rlrun.orchestrator")
ENV_WORKER_URLS_ENV = "RLRUN_ENV_WORKER_URLS"
INFERENCE_URLS_ENV = "RLRUN_INFERENCE_URLS"


def _urls(flag: list[str] | None, env: str) -> list[str]:
    return [u.rstrip("/") for u in (flag or os.environ.get(env, "").split(",")) if u]


def _mm_encoder(cfg: RuntimeConfig) -> Any:
    """The non-deferred path: the orchestrator materializes pixels itself and ships encoded tensors."""
    if cfg.multimodal.defer_materialization:
        return None
    from rlrun.runtime.mm import Materializer, encode_mm_kwargs, load_image_processor
    from rlrun.runtime.models.tiny import resolve_model

    mm = cfg.multimodal
    path = resolve_model(cfg.model.name, cfg.run_dir, seed=cfg.orchestrator.seed)
    materializer = Materializer(
        load_image_processor(path), mm.materialize_concurrency, mm.missing_image_policy
    )
    return lambda refs: encode_mm_kwargs(materializer.materialize(refs))


async def serve(cfg: RuntimeConfig, env_urls: list[str], inference_urls: list[str], status_port: int) -> None:
    from rlrun.runtime.upload.logger import SampleLogger

    run_dir = cfg.run_dir
    state = load_state(run_dir / "orchestrator", cfg.orchestrator.seed)
    publisher = ProgressPublisher(
        run_dir,
        Progress(run_id=cfg.run_id, attempt=state.attempt, step=state.next_step,
                 max_steps=cfg.orchestrator.max_steps, state="starting"),
    )  # fmt: skip
    runner = web.AppRunner(publisher.app())
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", status_port).start()
    sample_logger = SampleLogger(cfg.sample_upload, run_dir, run_dir, cfg.run_id)
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=600.0)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            orchestrator = Orchestrator(
                cfg, env_urls, inference_urls, client, publisher, sample_logger, state, _mm_encoder(cfg)
            )
            await orchestrator.run()
    except BaseException as exc:
        failed = publisher.current.model_copy(
            update={"state": "failed", "message": f"{type(exc).__name__}: {exc}"}
        )
        await publisher.publish(failed)
        raise
    finally:
        await sample_logger.aclose()
        await publisher.aclose()
        await runner.cleanup()
        release_memory()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlrun-orchestrator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument(
        "--env-worker-url", action="append", help=f"repeatable; default ${ENV_WORKER_URLS_ENV}"
    )
    parser.add_argument("--inference-url", action="append", help=f"repeatable; default ${INFERENCE_URLS_ENV}")
    parser.add_argument("--status-port", type=int, default=int(os.environ.get("RLRUN_STATUS_PORT", "8080")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s orchestrator %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the version poll would log 10 lines a second
    cfg = RuntimeConfig.load(args.config)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    env_urls = _urls(args.env_worker_url, ENV_WORKER_URLS_ENV)
    asyncio.run(serve(cfg, env_urls, _urls(args.inference_url, INFERENCE_URLS_ENV), args.status_port))
    return 0
