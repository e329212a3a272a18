"""The orchestrator role (`python -m rlrun.runtime.orchestrator` or `rlrun-orchestrator`).

Env-worker and inference base URLs come from flags or $RLRUN_ENV_WORKER_URLS / $RLRUN_INFERENCE_URLS
(comma-separated; in the cluster the env-workers' Service and one URL per inference replica); the status endpoint listens on --status-port, else
$RLRUN_PORT. $RLRUN_ATTEMPT (set by the operator) is the attempt its progress reports carry.
SIGTERM abandons the step in flight (its position is saved after every step, so a resumed orchestrator
draws that step's prompts again), unless its batch is written already: then the step is recorded first
(stopping.py), reports `interrupted` and exits 143, never 0: a Job must not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import httpx
from aiohttp import web

from rlrun import pod_contract
from rlrun.runtime import metrics, stackdump
from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.memory import release_memory
from rlrun.runtime.orchestrator.progress import ProgressPublisher
from rlrun.runtime.orchestrator.startup import wait_until_ready
from rlrun.runtime.orchestrator.state import load_state
from rlrun.runtime.orchestrator.stopping import COMMIT
from rlrun.runtime.tracking import Tracker
from rlrun.runtime.volume import ensure_writable

log = logging.getLogger("rlrun.orchestrator")
ENV_WORKER_URLS_ENV = pod_contract.ENV_WORKER_URLS_ENV
INFERENCE_URLS_ENV = pod_contract.INFERENCE_URLS_ENV
PORT_ENV = pod_contract.PORT_ENV
ATTEMPT_ENV = pod_contract.ATTEMPT_ENV
STOPPED_EXIT = 128 + signal.SIGTERM
SIGTERM_RECEIVED = threading.Event()


def _urls(flag: list[str] | None, environ: Mapping[str, str], env: str) -> list[str]:
    return [u.rstrip("/") for u in (flag or environ.get(env, "").split(",")) if u]


def _mm_encoder(cfg: RuntimeConfig) -> Any:
    """The non-deferred path: the orchestrator materializes pixels itself and ships encoded tensors
    (None for a sample whose image was dropped under missingImagePolicy "drop": the sample is dropped)."""
    if cfg.multimodal.defer_materialization:
        return None
    from rlrun.runtime.mm import Materializer, load_image_processor
    from rlrun.runtime.models.tiny import resolve_model

    path = resolve_model(cfg.model.name, cfg.run_dir, seed=cfg.orchestrator.seed)
    return Materializer.from_config(cfg.multimodal, load_image_processor(path), root=cfg.run_dir).encode


async def serve(
    cfg: RuntimeConfig,
    env_urls: list[str],
    inference_urls: list[str],
    status_port: int,
    attempt: int | None = None,
) -> None:
    """`attempt` (the operator's) replaces the saved state's count, so progress reports carry the attempt
    the operator expects even when an earlier attempt died before saving its state."""
    from rlrun.runtime.upload.logger import SampleLogger

    run_dir = cfg.run_dir
    state = load_state(run_dir / "orchestrator", cfg.orchestrator.seed)
    if attempt is not None:
        state.attempt = attempt
    metrics.ORCHESTRATOR_ATTEMPT.set(state.attempt)
    if cfg.resume_from is not None and state.next_step < cfg.resume_from.step:
        state.next_step = cfg.resume_from.step  # a fork's first start: its trainer starts there too
    publisher = ProgressPublisher(
        run_dir,
        Progress(run_id=cfg.run_id, attempt=state.attempt, step=state.next_step,
                 max_steps=cfg.orchestrator.max_steps, state="starting"),
    )  # fmt: skip
    runner = web.AppRunner(publisher.app())
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", status_port).start()
    sample_logger = SampleLogger(cfg.sample_upload, run_dir, run_dir, cfg.run_id)
    tracker, succeeded = None, False
    orchestrator: Orchestrator | None = None
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=600.0)
    try:
        tracker = Tracker.open(cfg, state.attempt)  # None (no tracking library imported) unless configured
        async with httpx.AsyncClient(timeout=timeout) as client:
            orchestrator = Orchestrator(
                cfg, env_urls, inference_urls, client, publisher, sample_logger, state, _mm_encoder(cfg),
                tracker,
            )  # fmt: skip
            # Bounded start-up wait, inference first: a slow server is not a failure (startup.py).
            await wait_until_ready(
                client,
                [("inference", inference_urls), ("env-worker", env_urls)],
                cfg.orchestrator.startup_timeout_seconds,
                lambda m: publisher.publish(publisher.current.model_copy(update={"message": m})),
            )
            await orchestrator.run()
            succeeded = True
    except BaseException as exc:
        # A peer stopped with us (a suspend stops every pod at once) is no failure of the run.
        if isinstance(exc, asyncio.CancelledError) or SIGTERM_RECEIVED.is_set():
            update = {
                "state": "interrupted",
                "message": f"stopped by SIGTERM; resumes at step {state.next_step}",
            }
        else:
            update = {"state": "failed", "message": f"{type(exc).__name__}: {exc}"}
        await publisher.publish(publisher.current.model_copy(update=update))
        raise
    finally:
        if orchestrator is not None:  # a stop mid-step: the committed step's samples still reach the volume
            await orchestrator.samples_logged()
        if tracker is not None:
            await asyncio.to_thread(tracker.close, succeeded)
        await sample_logger.aclose()
        await publisher.aclose()
        await runner.cleanup()
        release_memory()


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, resolved against the environment (pure): `env_urls`, `inference_urls`,
    `status_port` (--status-port, else $RLRUN_PORT, else 8200, the pods' port) and `attempt` ($RLRUN_ATTEMPT, the
    operator's orchestrator attempt; None outside a cluster, where the saved state counts restarts)."""
    parser = argparse.ArgumentParser(prog="rlrun-orchestrator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument(
        "--env-worker-url", action="append", help=f"repeatable; default ${ENV_WORKER_URLS_ENV}"
    )
    parser.add_argument("--inference-url", action="append", help=f"repeatable; default ${INFERENCE_URLS_ENV}")
    parser.add_argument(
        "--status-port", type=int, default=int(environ.get(PORT_ENV) or pod_contract.ORCHESTRATOR_PORT)
    )
    args = parser.parse_args(argv)
    args.env_urls = _urls(args.env_worker_url, environ, ENV_WORKER_URLS_ENV)
    args.inference_urls = _urls(args.inference_url, environ, INFERENCE_URLS_ENV)
    attempt = environ.get(ATTEMPT_ENV)
    if attempt is not None and not attempt.isdigit():
        parser.error(f"${ATTEMPT_ENV} must be a non-negative integer, got {attempt!r}")
    args.attempt = int(attempt) if attempt is not None else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = settings_from(argv, os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s orchestrator %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the version poll would log 10 lines a second
    cfg = RuntimeConfig.load(args.config)
    ensure_writable(cfg.run_dir)
    stackdump.install_role(cfg.run_dir, "orchestrator")  # `kill -USR1` dumps its stacks (hang diagnosis)
    if where := metrics.serve_from_env(os.environ):
        log.info("metrics on http://%s:%d/metrics", *where)
    stopped = asyncio.run(
        until_sigterm(serve(cfg, args.env_urls, args.inference_urls, args.status_port, args.attempt))
    )
    return STOPPED_EXIT if stopped else 0


async def until_sigterm(work: Coroutine[Any, Any, None]) -> bool:
    """Run `work`; SIGTERM cancels it. True when it was stopped that way.

    A plain `signal.signal` handler, not the loop's: it runs at the next bytecode, so the flag is set
    before the loop handles a peer's connection error caused by the same stop."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()

    def on_sigterm(_signum: int, _frame: object) -> None:
        SIGTERM_RECEIVED.set()
        loop.call_soon_threadsafe(COMMIT.request_stop, task.cancel)  # a step being committed finishes first

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        await task
    except asyncio.CancelledError:
        return True
    except Exception:
        if SIGTERM_RECEIVED.is_set():
            return True
        raise
    return False
