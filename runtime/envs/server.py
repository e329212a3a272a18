"""`rlrun-env-worker`: serves rollout groups for one environment over HTTP.

    rlrun-env-worker [--config rlrun-config.json] [--host 0.0.0.0] [--port 8100]
                     [--inference-url URL ...] [--ready-file PATH]

    POST /v1/rollouts {"example_index": i, "group_size": G, "sampling": {"temperature", "max_tokens", "seed"},
                       "min_policy_version": v, "inference_urls": [the in-sync replicas, a subset of ours]}
      -> {"rollouts": [{example_id, env, prompt, completion, prompt_ids, completion_ids,
                        completion_logprobs, reward, policy_version, finish_reason, mm}]}
      a multi-turn environment's rollouts carry `segments` (each: prompt_ids, completion_ids,
      completion_logprobs, completion_mask, mm) and `turns` instead of the token fields
    GET  /health

Inference URLs come from --inference-url (repeatable) or $RLRUN_INFERENCE_URLS (comma separated);
--port defaults to $RLRUN_PORT, then 8100.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlrun import pod_contract
from rlrun.runtime import metrics
from rlrun.runtime.envs.worker import RolloutError, RolloutWorker, Sampling
from rlrun.runtime.serving import serve

log = logging.getLogger("rlrun.env_worker")
WORKER = web.AppKey("worker", RolloutWorker)
INFERENCE_URLS_ENV = pod_contract.INFERENCE_URLS_ENV
PORT_ENV = pod_contract.PORT_ENV


class SamplingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0)
    max_tokens: int = Field(8, ge=1, le=4096)
    seed: int | None = Field(None, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)


class RolloutsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    example_index: int = Field(ge=0)
    group_size: int = Field(ge=1, le=1024)
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    # Completions from an older policy are refused (the orchestrator sends step - maxAsyncSteps).
    min_policy_version: int = Field(0, ge=0)
    # The inference replicas in sync with the current policy (the orchestrator's choice); unset: all.
    inference_urls: list[str] | None = Field(None, min_length=1, max_length=256)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


async def rollouts(request: web.Request) -> web.Response:
    try:
        body = RolloutsBody.model_validate(await request.json())
    except (ValidationError, json.JSONDecodeError) as err:
        return _error(400, f"invalid rollouts request: {err}")
    sampling = Sampling(**body.sampling.model_dump())
    worker: RolloutWorker = request.app[WORKER]
    if unknown := worker.unknown_urls(body.inference_urls or ()):
        # Only the replicas this env-worker was configured with: a request never points it elsewhere.
        return _error(400, f"inference_urls {unknown} are not among this env-worker's replicas {worker.urls}")
    try:
        with metrics.ROLLOUTS_IN_FLIGHT.track_inprogress(), metrics.ENV_ERRORS.count_exceptions():
            out = await worker.rollouts(
                body.example_index, body.group_size, sampling, body.min_policy_version, body.inference_urls
            )
    except RolloutError as err:
        log.error("example %d failed: %s", body.example_index, err)
        return _error(502, f"example {body.example_index}: {err}")
    metrics.ENV_ROLLOUTS.inc(len(out))
    return web.json_response({"rollouts": out})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "env": request.app[WORKER].env.id})


def create_app(make_worker: Callable[[httpx.AsyncClient], RolloutWorker]) -> web.Application:
    """The app; the worker is built on startup around an HTTP client that lives as long as the app."""
    app = web.Application(client_max_size=16 * 1024 * 1024)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=10.0)) as client:
            app[WORKER] = make_worker(client)
            yield
            await app[WORKER].aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/rollouts", rollouts)
    app.router.add_get("/health", health)
    return app


def worker_factory(config: Any, inference_urls: list[str]) -> Callable[[httpx.AsyncClient], RolloutWorker]:
    """Everything the worker needs from the runtime config: environment, model's processor, asset tree."""
    from rlrun.runtime.assets import RunTree
    from rlrun.runtime.envs.registry import make_environment
    from rlrun.runtime.envs.worker import image_token_id
    from rlrun.runtime.mm import load_image_processor
    from rlrun.runtime.models.tiny import resolve_model

    env_cfg = config.env_workers.environment
    env = make_environment(env_cfg.id, env_cfg.args)
    model = resolve_model(config.model.name, config.run_dir, seed=config.orchestrator.seed)
    if Path(model).is_dir():
        processor = load_image_processor(model)
    else:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(model)
    tree = RunTree(config.asset_root, config.run_id).ensure()
    mm = config.multimodal
    token_id = image_token_id(model)

    def make(client: httpx.AsyncClient) -> RolloutWorker:
        return RolloutWorker(
            env, inference_urls, client, tree.images_dir, processor, token_id,
            model_name=config.model.name, cpu_workers=config.env_workers.workers_per_replica,
            source_roots=[tree.assets_dir, *map(Path, mm.dataset_roots)], max_image_pixels=mm.max_image_pixels,
        )  # fmt: skip

    return make


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, resolved against the environment (pure; exits like argparse on a bad one):
    --port, else $RLRUN_PORT, else 8100; `inference_urls` from --inference-url, else $RLRUN_INFERENCE_URLS."""
    parser = argparse.ArgumentParser(prog="rlrun-env-worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument(
        "--port", type=int, default=int(environ.get(PORT_ENV) or pod_contract.ENV_WORKER_PORT)
    )
    parser.add_argument(
        "--inference-url", action="append", default=[], help=f"repeatable; default ${INFERENCE_URLS_ENV}"
    )
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    args.inference_urls = args.inference_url or [
        u for u in environ.get(INFERENCE_URLS_ENV, "").split(",") if u
    ]
    if not args.inference_urls:
        parser.error(f"no inference URL: pass --inference-url or set ${INFERENCE_URLS_ENV}")
    return args


def main(argv: list[str] | None = None) -> int:
    from rlrun.runtime import stackdump
    from rlrun.runtime.config import ENVIRONMENT_INVALID, RuntimeConfig
    from rlrun.runtime.envs.packages import InstallFailed, reexec_in_venv
    from rlrun.runtime.envs.registry import EnvironmentArgsInvalid, EnvironmentNotFound
    from rlrun.runtime.termination import fail_start
    from rlrun.runtime.volume import ensure_writable

    args = settings_from(argv, os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = RuntimeConfig.load(args.config)
    ensure_writable(config.run_dir)
    try:  # packages named in the config: install (cached on the volume) and run in their virtualenv
        reexec_in_venv(config.run_dir, config.env_workers.packages, sys.argv[1:] if argv is None else argv)
    except InstallFailed as err:  # an index may come back: exit and let the pod restart
        log.error("%s", err)
        return 1
    try:
        factory = worker_factory(config, args.inference_urls)
    except (EnvironmentNotFound, EnvironmentArgsInvalid) as err:  # no restart can install a package
        fail_start(f"{ENVIRONMENT_INVALID}: {err}")
    stackdump.install_role(config.run_dir, "env-worker")  # `kill -USR1` dumps its stacks (hang diagnosis)
    app = create_app(factory)
    if where := metrics.serve_from_env(os.environ):
        log.info("metrics on http://%s:%d/metrics", *where)
    asyncio.run(serve(app, args.host, args.port, args.ready_file, "env-worker"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
