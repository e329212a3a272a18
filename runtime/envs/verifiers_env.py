"""`environment.id: verifiers`: a verifiers (PyPI `verifiers`, v1 API) taskset as an rlrun environment.

    environment:
      id: verifiers
      args: {taskset: my_taskset, taskset_args: {...}}

verifiers 0.4 requires openai<3 and rlrun pins openai 3, so verifiers runs in its own virtualenv
(tools/verifiers/build.sh; its interpreter is `args.python` or $RLRUN_VERIFIERS_PYTHON), in a bridge process
(verifiers_bridge.py) the env-worker talks to over stdin/stdout. verifiers plays each episode itself, its
taskset's Env (single-turn, or multi-turn through its own `run()`), and scores it with the taskset's
`@reward` functions; its agent calls the env-worker's loopback proxy (agent_proxy.py), so every token the
policy sampled, with its logprob, comes from rlrun's inference and nothing is re-tokenized.

The taskset module must be importable by that interpreter (installed in its virtualenv, or on PYTHONPATH)
and finite. Tool definitions (MCP toolsets) are refused by the proxy: rlrun's chat template renders none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlrun.runtime.envs.base import AgentEnvironment, AgentEpisode

PYTHON_ENV = "RLRUN_VERIFIERS_PYTHON"  # the verifiers interpreter when args.python is unset
BRIDGE = Path(__file__).with_name("verifiers_bridge.py")
TASKSET_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
LINE_LIMIT = 64 << 20  # one answer line carries a whole conversation


class VerifiersArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    taskset: str = Field(description="The verifiers taskset id: the module exporting its Taskset (and Env).")
    taskset_args: dict[str, Any] = Field(default_factory=dict, description="Fields of the taskset's config.")
    python: str | None = Field(None, description=f"The verifiers interpreter (default ${PYTHON_ENV}).")
    start_timeout_seconds: float = Field(300.0, gt=0, le=3600)
    episode_timeout_seconds: float = Field(600.0, gt=0, le=86400)

    @field_validator("taskset")
    @classmethod
    def _module(cls, value: str) -> str:
        if not TASKSET_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a module name (letters, digits, '_', '-', dotted)")
        return value


class VerifiersError(RuntimeError):
    """The bridge failed, or verifiers failed an episode."""


class VerifiersEnvironment(AgentEnvironment):
    """A verifiers taskset played by verifiers in its own interpreter; see the module docstring."""

    id = "verifiers"
    Args = VerifiersArgs

    def __init__(
        self,
        taskset: str,
        taskset_args: dict[str, Any] | None = None,
        python: str | None = None,
        start_timeout_seconds: float = 300.0,
        episode_timeout_seconds: float = 600.0,
    ) -> None:
        interpreter = python or os.environ.get(PYTHON_ENV, "")
        if not interpreter or not os.access(interpreter, os.X_OK):
            raise ValueError(
                f"no verifiers interpreter: set args.python or ${PYTHON_ENV} to the python that "
                f"tools/verifiers/build.sh prints (got {interpreter!r})"
            )
        self.argv = [interpreter, "-P", str(BRIDGE)]  # -P: the bridge's folder must not shadow modules
        self.taskset, self.taskset_args = taskset, dict(taskset_args or {})
        self.start_timeout, self.episode_timeout = start_timeout_seconds, episode_timeout_seconds
        self._size = self._describe()  # an unknown or broken taskset fails the env-worker's start, named
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count()
        self._starting = asyncio.Lock()

    def _command(self, verb: str) -> list[str]:
        return [*self.argv, verb, self.taskset, json.dumps(self.taskset_args)]

    def _describe(self) -> int:
        try:
            done = subprocess.run(
                self._command("describe"), capture_output=True, text=True, timeout=self.start_timeout
            )
        except subprocess.TimeoutExpired:
            raise ValueError(
                f"verifiers taskset {self.taskset!r}: not loaded within {self.start_timeout}s"
            ) from None
        lines = done.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-2000:]}
        if "size" not in answer:
            raise ValueError(f"verifiers taskset {self.taskset!r}: {answer.get('error')}")
        return int(answer["size"])

    def __len__(self) -> int:
        return self._size

    async def _bridge(self) -> None:
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return
            self._proc = await asyncio.create_subprocess_exec(
                *self._command("serve"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
            )
            assert self._proc.stdout is not None
            try:
                ready = await asyncio.wait_for(self._proc.stdout.readline(), self.start_timeout)
            except TimeoutError:
                raise VerifiersError(
                    f"the verifiers bridge did not start within {self.start_timeout}s"
                ) from None
            if not ready:
                code = await self._proc.wait()
                raise VerifiersError(
                    f"the verifiers bridge exited with code {code} at start (see its log above)"
                )
            self._reader = asyncio.create_task(self._read(self._proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            answer = json.loads(line)
            future = self._pending.pop(answer.get("id"), None)
            if future is not None and not future.done():
                future.set_result(answer)
        code = await proc.wait()
        for future in self._pending.values():  # each waiting episode learns the bridge is gone, at once
            if not future.done():
                future.set_exception(VerifiersError(f"the verifiers bridge exited with code {code}"))
        self._pending.clear()

    async def play(self, index: int, base_url: str, model: str) -> AgentEpisode:
        await self._bridge()
        assert self._proc is not None and self._proc.stdin is not None
        request_id = next(self._ids)
        future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        request = {"id": request_id, "index": index, "base_url": base_url, "model": model}
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self._proc.stdin.drain()
        try:
            answer = await asyncio.wait_for(future, self.episode_timeout)
        except TimeoutError:
            raise VerifiersError(f"episode not finished within {self.episode_timeout}s") from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in answer:
            raise VerifiersError(answer["error"])
        return AgentEpisode(answer["example_id"], answer["messages"], float(answer["reward"]))

    async def aclose(self) -> None:
        """Close the bridge's stdin (it stops its episodes and exits); kill it if it has not within 30 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
