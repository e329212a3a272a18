"""The inference HTTP contract (OpenAI chat completions + rlrun's extension), as pure functions.

The same contract is served by the CPU engine here and by vLLM with rlrun's extension on GPU pods, so
env-workers never know which one they talk to:

    POST /v1/chat/completions  OpenAI request -> chat.completion + per-choice `token_ids` (completion ids,
                               stop token included), `logprobs.content[i].logprob`, top-level
                               `prompt_token_ids` and `rlrun_policy_version`
    GET  /v1/models            OpenAI model list: the one served model (OpenAI-compatible tools read its id)
    POST /v1/load_weights      {"path": "<run_dir>/weights/step_<n>", "version": n} -> {"version": n}
    GET  /v1/version           {"version": n}
    GET  /health               200 once the model is loaded

Images are `file://` URLs under the asset root only: the server reads the shared volume, and a URL
anywhere else (or a data URL, or http) is a client bug that must fail loudly with a 400 naming it.
Streaming (`"stream": true`) is refused with a 400 by the CPU engine: rollouts need each completion whole
(token ids, logprobs, policy version), and an empty 200 stream would look like a model that said nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlrun.runtime.assets import latest_weights as latest_weights
from rlrun.runtime.assets import resolve_inside
from rlrun.runtime.models.chat import image_urls


class RequestError(ValueError):
    """A client error: becomes HTTP 400 with this message."""


class ChatCompletionRequest(BaseModel):
    """The fields rlrun uses; other OpenAI fields are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    messages: list[dict[str, Any]] = Field(min_length=1)
    n: int = Field(1, ge=1, le=256)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    seed: int | None = Field(None, ge=0)
    logprobs: bool = False
    stream: bool = False

    @property
    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16


class LoadWeightsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    version: int = Field(ge=0)


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a JSON body into `model`, turning pydantic errors into one readable RequestError."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())
        raise RequestError(f"invalid {model.__name__}: {details}") from None


def check_image_urls(messages: Sequence[dict[str, Any]], asset_root: Path) -> list[Path]:
    """The image paths of `messages`, each proven to be a `file://` URL under `asset_root`."""
    paths = []
    try:
        urls = image_urls(messages)
    except ValueError as err:
        raise RequestError(str(err)) from None
    for url in urls:
        if not url.startswith("file://"):
            raise RequestError(
                f"image URL {url[:120]!r} is not a file:// URL under the asset root {asset_root}"
            )
        try:
            path = resolve_inside(asset_root, url)
        except ValueError as err:
            raise RequestError(
                f"image URL {url[:200]!r} is not under the asset root {asset_root}: {err}"
            ) from None
        if not path.is_file():
            raise RequestError(f"image URL {url[:200]!r}: no such file {path}")
        paths.append(path)
    return paths


def check_weights_path(path: str, run_dir: Path) -> Path:
    """The weights dir of a load_weights call, proven to be inside the run dir and complete (DONE)."""
    try:
        target = resolve_inside(run_dir, path)
    except ValueError as err:
        raise RequestError(f"weights path {path!r} is outside the run dir {run_dir}: {err}") from None
    if not (target / "DONE").is_file():
        raise RequestError(f"weights path {target} has no DONE marker (missing or incomplete export)")
    if not (target / "model.safetensors").is_file():
        raise RequestError(f"weights path {target} has no model.safetensors")
    return target


STREAM_REFUSED = (
    "stream=true is not supported by this engine: request the whole completion (stream=false); rlrun "
    "reads token ids, logprobs and the policy version of complete choices"
)


def model_list(model: str, created: int) -> dict[str, Any]:
    """The OpenAI `GET /v1/models` answer for a server of one model (the shape vLLM serves)."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "rlrun"}],
    }


def completion_response(
    *,
    model: str,
    prompt_ids: list[int],
    choices: Sequence[tuple[list[int], list[float], str, str]],
    tokens: Sequence[list[str]],
    version: int,
    with_logprobs: bool,
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object plus rlrun's token ids and policy version.

    `choices` are (token_ids, logprobs, finish_reason, text); `tokens` the token strings per choice.
    """
    out_choices = []
    for index, ((token_ids, logprobs, reason, text), strings) in enumerate(zip(choices, tokens, strict=True)):
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reason,
            "token_ids": token_ids,
            "logprobs": None,
        }
        if with_logprobs:
            choice["logprobs"] = {
                "content": [
                    {"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": []}
                    for s, lp in zip(strings, logprobs, strict=True)
                ]
            }
        out_choices.append(choice)
    completion_tokens = sum(len(c[0]) for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": out_choices,
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt_ids) + completion_tokens,
        },
        "prompt_token_ids": prompt_ids,
        "rlrun_policy_version": version,
    }
