"""GPU inference: vLLM's OpenAI server plus rlrun's extension, serving the same contract as the CPU engine.

    python -m rlrun.runtime.inference.vllm_server [--config cfg.json] [--port 8000] [-- <vllm serve args>]

--port defaults to $RLRUN_PORT, then 8000.

vLLM already serves chat completions with `file://` images (`--allowed-local-media-path`), token ids
(`return_token_ids`, which the env-worker always sends) and logprobs of the sampled distribution
(`--logprobs-mode processed_logprobs`: after temperature, what the trainer recomputes). rlrun adds:

  * `POST /v1/load_weights {"path", "version"}`: checked like the CPU engine (inside the run dir, DONE
    marker), then every worker loads `model.safetensors` through the model's own `load_weights` (which
    maps HF checkpoint names) and the prefix cache is reset, since cached KV belongs to the old weights;
  * `GET /v1/version` and `rlrun_policy_version` on every chat completion.

vLLM is imported lazily: it lives in its own virtualenv in the runtime image (it pins torch), and this
module must import without it. It cannot run on a CPU-only machine; the CPU engine covers the contract.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlrun import pod_contract

EXTENSION = "rlrun.runtime.inference.vllm_server.WeightReloadExtension"


class WeightReloadExtension:
    """Mixed into every vLLM worker (`--worker-extension-cls`); called through `collective_rpc`."""

    def rlrun_load_weights(self, weights_dir: str) -> None:
        from safetensors.torch import load_file

        state = load_file(os.path.join(weights_dir, "model.safetensors"), device="cpu")
        self.model_runner.model.load_weights(weights=state.items())  # type: ignore[attr-defined]


def vllm_argv(model: str, config: Any, host: str, port: int, extra: list[str]) -> list[str]:
    """The `vllm serve` arguments for this run (pure, so the operator's rendering can be checked)."""
    return [
        model,
        "--host", host,
        "--port", str(port),
        "--served-model-name", config.model.name,
        "--allowed-local-media-path", str(config.asset_root),
        "--worker-extension-cls", EXTENSION,
        "--logprobs-mode", "processed_logprobs",
        "--generation-config", "vllm",
        *extra,
    ]  # fmt: skip


def install_extension(app: Any, run_dir: Path) -> None:
    """Add rlrun's routes and the policy-version field to vLLM's FastAPI app."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from rlrun.runtime.inference.protocol import LoadWeightsRequest, RequestError, check_weights_path, parse

    app.state.rlrun_version = 0

    async def load_weights(request: Request) -> JSONResponse:
        try:
            body = parse(LoadWeightsRequest, await request.json())
            path = check_weights_path(body.path, run_dir)
        except RequestError as err:
            return JSONResponse({"error": {"message": str(err), "code": 400}}, status_code=400)
        engine = request.app.state.engine_client
        await engine.collective_rpc("rlrun_load_weights", args=(str(path),))
        await engine.reset_prefix_cache()
        request.app.state.rlrun_version = body.version
        return JSONResponse({"version": body.version})

    async def version(request: Request) -> JSONResponse:
        return JSONResponse({"version": request.app.state.rlrun_version})

    @app.middleware("http")
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
        return JSONResponse(body)

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
    args, extra = parser.parse_known_args(argv)
    return args, [a for a in extra if a != "--"]


def main(argv: list[str] | None = None) -> int:
    from rlrun.runtime.config import RuntimeConfig
    from rlrun.runtime.models.tiny import resolve_model

    args, extra = settings_from(argv, os.environ)
    config = RuntimeConfig.load(args.config)
    model = str(resolve_model(config.model.name, config.run_dir, seed=config.orchestrator.seed))

    import uvloop
    from vllm.entrypoints.openai import api_server
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    vllm_parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    vllm_parser.add_argument("model_tag", nargs="?")
    vllm_args = vllm_parser.parse_args(vllm_argv(model, config, args.host, args.port, extra))
    vllm_args.model = vllm_args.model_tag or vllm_args.model
    validate_parsed_serve_args(vllm_args)

    build_app = api_server.build_app

    def build_app_with_extension(*a: Any, **kw: Any) -> Any:
        app = build_app(*a, **kw)
        install_extension(app, config.run_dir)
        return app

    api_server.build_app = build_app_with_extension
    uvloop.run(api_server.run_server(vllm_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
