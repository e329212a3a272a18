"""`rlrun-inference`: the CPU engine behind the inference HTTP contract (see protocol.py).

    rlrun-inference [--config rlrun-config.json] [--host 127.0.0.1] [--port 0] [--ready-file PATH]

--port defaults to $RLRUN_PORT, then 8000.
The model comes from the runtime config (`model.name`; the builtin tiny model is built once under the run
dir). With `--ready-file`, the server writes {"url": ..., "port": ...} there atomically once it listens
and the model is loaded, which is how `rlrun local` finds a server started on port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from rlrun import pod_contract
from rlrun.runtime import metrics
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.inference.batching import MicroBatcher
from rlrun.runtime.inference.engine import Completion, Engine, GenerationRequest
from rlrun.runtime.inference.protocol import (
    STREAM_REFUSED,
    ChatCompletionRequest,
    LoadWeightsRequest,
    RequestError,
    check_image_urls,
    check_weights_path,
    completion_response,
    latest_weights,
    model_list,
    parse,
)
from rlrun.runtime.models.chat import load_image_url, render_prompt
from rlrun.runtime.serving import serve

log = logging.getLogger("rlrun.inference")
PORT_ENV = pod_contract.PORT_ENV

ENGINE = web.AppKey("engine", Engine)
BATCHER = web.AppKey("batcher", MicroBatcher)
RENDERER = web.AppKey("renderer", ThreadPoolExecutor)  # one thread: the tokenizer is not re-entrant


@dataclass(frozen=True)
class ServerSettings:
    asset_root: Path  # image URLs must resolve under it
    run_dir: Path  # weight paths must resolve under it
    model_name: str
    batch_window_s: float = 0.005
    max_batch_rows: int = 256
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # multimodal.maxImagePixels


SETTINGS = web.AppKey("settings", ServerSettings)
STARTED = web.AppKey("started", int)  # unix time the app was created: the model's `created`


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"request body is not JSON: {err}") from None


def _bad_request(message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": 400}}, status=400
    )


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as err:
        return _bad_request(str(err))


async def chat_completions(request: web.Request) -> web.Response:
    app = request.app
    engine, settings = app[ENGINE], app[SETTINGS]
    body = parse(ChatCompletionRequest, await _json_body(request))
    if body.stream:
        raise RequestError(STREAM_REFUSED)
    check_image_urls(body.messages, settings.asset_root)
    load = partial(load_image_url, root=settings.asset_root, max_pixels=settings.max_image_pixels)
    try:  # decoding images is CPU work: off the event loop, so /health and other requests stay answered
        prompt_ids, images = await asyncio.get_running_loop().run_in_executor(
            app[RENDERER], render_prompt, body.messages, engine.tokenizer, engine.image_processor, load
        )
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise RequestError(f"cannot render messages: {err}") from None
    gen = GenerationRequest(
        prompt_ids, images, n=body.n, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.token_limit, seed=body.seed,
    )  # fmt: skip
    completions, version = await app[BATCHER].submit(gen)
    metrics.COMPLETIONS.inc(len(completions))
    choices = [(c.token_ids, c.logprobs, c.finish_reason, engine.decode(c.token_ids)) for c in completions]
    tokens = [[engine.tokenizer.decode([t]) for t in c.token_ids] for c in completions]
    return web.json_response(
        completion_response(
            model=body.model or settings.model_name,
            prompt_ids=prompt_ids,
            choices=choices,
            tokens=tokens,
            version=version,
            with_logprobs=body.logprobs,
        )
    )


async def models(request: web.Request) -> web.Response:
    return web.json_response(model_list(request.app[SETTINGS].model_name, request.app[STARTED]))


async def load_weights(request: web.Request) -> web.Response:
    body = parse(LoadWeightsRequest, await _json_body(request))
    path = check_weights_path(body.path, request.app[SETTINGS].run_dir)
    engine = request.app[ENGINE]
    try:
        with metrics.RELOAD_SECONDS.time():
            version = await request.app[BATCHER].call(engine.load_weights, path, body.version)
    except (ValueError, FileNotFoundError) as err:
        raise RequestError(str(err)) from None
    log.info("loaded weights %s as version %d", path, version)
    return web.json_response({"version": version})


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[ENGINE].version})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[BATCHER].stats.as_dict())


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": request.app[ENGINE].version})


def create_app(engine: Engine, settings: ServerSettings) -> web.Application:
    """The aiohttp app around a loaded engine (callers load the engine first: /health means ready)."""

    def run_batch(requests: list[GenerationRequest]) -> list[tuple[list[Completion], int]]:
        results = engine.generate(requests)
        return [(r, engine.version) for r in results]

    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[STARTED] = int(time.time())
    app[BATCHER] = MicroBatcher(
        run_batch, rows=lambda r: r.n, window_s=settings.batch_window_s, max_rows=settings.max_batch_rows
    )

    app[RENDERER] = ThreadPoolExecutor(1, thread_name_prefix="render")
    metrics.POLICY_VERSION.set_function(lambda: engine.version)
    metrics.QUEUE_DEPTH.set_function(app[BATCHER].waiting)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        app[BATCHER].start()
        yield
        await app[BATCHER].stop()
        app[RENDERER].shutdown(wait=True, cancel_futures=True)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/load_weights", load_weights)
    app.router.add_get("/v1/version", version)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/health", health)
    return app


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, resolved against the environment (pure): the listen port is --port, else
    $RLRUN_PORT (what the operator's pods set), else 8000. No server is started."""
    parser = argparse.ArgumentParser(prog="rlrun-inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument("--model", help="override model.name of the config")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(environ.get(PORT_ENV) or pod_contract.INFERENCE_PORT))
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--max-batch-rows", type=int, default=256)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from rlrun.runtime import stackdump
    from rlrun.runtime.config import RuntimeConfig
    from rlrun.runtime.inference.engine import apply_thread_limit, default_device
    from rlrun.runtime.models.tiny import resolve_model

    args = settings_from(argv, os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    apply_thread_limit()
    config = RuntimeConfig.load(args.config)
    stackdump.install_role(config.run_dir, "inference")  # `kill -USR1` dumps its stacks (hang diagnosis)
    name = args.model or config.model.name
    model_dir = resolve_model(name, config.run_dir, seed=config.orchestrator.seed)
    engine = Engine(model_dir, device=args.device or default_device())
    if latest := latest_weights(config.run_dir):  # restarted mid-run: serve the current policy
        engine.load_weights(*latest)
        log.info("loaded the run's latest weights %s as version %d", *latest)
    settings = ServerSettings(
        asset_root=Path(config.asset_root),
        run_dir=config.run_dir,
        model_name=name,
        batch_window_s=args.batch_window_ms / 1000,
        max_batch_rows=args.max_batch_rows,
        max_image_pixels=config.multimodal.max_image_pixels,
    )
    if where := metrics.serve_from_env(os.environ):
        log.info("metrics on http://%s:%d/metrics", *where)
    asyncio.run(serve(create_app(engine, settings), args.host, args.port, args.ready_file, "inference"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
