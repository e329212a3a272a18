"""Runs a verifiers (v1) environment for rlrun, in the verifiers virtualenv, over JSON lines on stdin/stdout.

verifiers 0.4 requires openai<3 and rlrun pins openai 3, so the two cannot share a virtualenv: this file is
run as a script by that virtualenv's interpreter (tools/verifiers/build.sh) and imports nothing from rlrun.
The rlrun side is rlrun.runtime.envs.verifiers_env.

    python verifiers_bridge.py describe TASKSET_ID ARGS_JSON   -> one line {"size": N} or {"error": ...}
    python verifiers_bridge.py serve TASKSET_ID ARGS_JSON      -> request/answer lines until stdin closes

A `serve` request is {"id": K, "index": I, "base_url": URL, "model": M}: one episode of task I (modulo the
taskset's size) played by verifiers itself, its agent talking to the OpenAI-compatible URL (the env-worker's
loopback proxy, which names the rollout by M and records every token inference sampled). The answer is
{"id": K, "reward": R, "messages": [...], "example_id": "..."} with the reward the taskset's rubric gave the
episode, or {"id": K, "error": "..."}.

The agent is verifiers' chat-only `null` harness on a local `subprocess` runtime: no sandbox, no tunnel. Its
chat program's dependencies are installed by uv from the wheelhouse next to this interpreter (built with
it), never from an index: nothing leaves the machine but the agent's calls to the given loopback URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

PROXY_KEY_VAR = "RLRUN_VERIFIERS_PROXY_KEY"  # the proxy takes any key; the client needs one to be set


def _offline() -> None:
    """uv (which builds the chat program's environment) resolves from the local wheelhouse only."""
    wheelhouse = Path(sys.prefix) / "wheelhouse"
    if not wheelhouse.is_dir():
        raise SystemExit(
            f"no wheelhouse at {wheelhouse}: build this interpreter with tools/verifiers/build.sh"
        )
    os.environ.update(UV_NO_INDEX="1", UV_FIND_LINKS=str(wheelhouse), UV_PYTHON_DOWNLOADS="never")
    os.environ.setdefault(PROXY_KEY_VAR, "rlrun")


def _environment(taskset_id: str, args: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The verifiers env for `taskset_id` (its own Env subclass when the module exports one) and its tasks."""
    from verifiers.v1.utils.loaders import load_environment, resolve_env_config

    config = resolve_env_config(
        {
            "taskset": {**args, "id": taskset_id},
            "agent": {"harness": {"id": "null"}, "runtime": {"type": "subprocess"}},
        }
    )
    env = load_environment(config)
    if not env.taskset.bounded:
        raise ValueError(
            f"taskset {taskset_id!r} is infinite; rlrun samples tasks by index from a finite one"
        )
    tasks = list(env.taskset)
    if not tasks:
        raise ValueError(f"taskset {taskset_id!r} has no tasks")
    return env, tasks


def _message(message: Any) -> dict[str, Any]:
    dumped = message.model_dump(mode="json", exclude_none=True)
    return {k: v for k, v in dumped.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}


async def _episode(env: Any, tasks: list[Any], request: dict[str, Any]) -> dict[str, Any]:
    from verifiers.v1.clients import ModelContext
    from verifiers.v1.configs.client import EvalClientConfig

    if not str(request["base_url"]).startswith("http://127.0.0.1:"):  # the agent's calls stay on this machine
        raise ValueError(f"base_url {request['base_url']!r} is not the env-worker's loopback proxy")
    task = tasks[int(request["index"]) % len(tasks)]
    client = EvalClientConfig(base_url=request["base_url"], api_key_var=PROXY_KEY_VAR)
    episode = await env.run_episode(task, ModelContext(model=request["model"], client=client))
    if not episode.ok or not episode.traces:
        errors = [e.message for e in episode.errors] + [
            e.message for trace in episode.traces for e in getattr(trace, "errors", [])
        ]
        return {"id": request["id"], "error": f"episode failed: {errors or 'no trace'}"}
    trace = episode.traces[-1]
    return {
        "id": request["id"],
        "example_id": task.data.id or f"task-{task.data.idx}",
        "reward": float(trace.reward),
        "messages": [_message(m) for m in trace.messages],
    }


async def _serve(taskset_id: str, args: dict[str, Any]) -> None:
    env, tasks = _environment(taskset_id, args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def answer(line: dict[str, Any]) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()

    async def one(request: dict[str, Any]) -> None:
        try:
            answer(await _episode(env, tasks, request))
        except Exception as err:  # any failure of one episode is that episode's answer, not the bridge's end
            answer({"id": request.get("id"), "error": f"{type(err).__name__}: {err}"})

    running: set[asyncio.Task[None]] = set()
    async with env.serving():
        answer({"ready": True, "size": len(tasks)})
        while line := await reader.readline():  # EOF: the env-worker closed the pipe (or died): stop
            task = asyncio.create_task(one(json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("describe", "serve"):
        print(__doc__, file=sys.stderr)
        return 2
    command, taskset_id, args = argv[0], argv[1], json.loads(argv[2])
    _offline()
    sys.stdout = os.fdopen(os.dup(1), "w")  # the protocol's stream; stray prints of the env go to stderr
    os.dup2(2, 1)
    if command == "describe":
        try:
            _, tasks = _environment(taskset_id, args)
        except Exception as err:  # the rlrun side reports it as the environment's configuration error
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
            return 1
        print(json.dumps({"size": len(tasks)}), flush=True)
        return 0
    asyncio.run(_serve(taskset_id, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
