"""The verifiers adapter's refusals, each named at the env-worker's start or on the request that caused it.

The taskset checks run the real bridge on the verifiers interpreter (tools/verifiers/build.sh, set by
`make test`); the proxy is a real aiohttp server on loopback, with the env-worker's sampling function
replaced by one that says which request reached it (the proxy's own refusals must not reach inference).
"""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from rlrun.runtime.envs.agent_proxy import AgentProxy, Episode
from rlrun.runtime.envs.registry import EnvironmentArgsInvalid, make_environment

TASKSET = """
import verifiers.v1 as vf


class Tiny(vf.Taskset[vf.Task, vf.TasksetConfig]):
    def load(self):
        yield vf.Task(vf.TaskData(prompt="hi"), self.config.task)


__all__ = ["Tiny"]
"""


@pytest.fixture(scope="module")
def verifiers_python() -> str:
    python = os.environ.get("RLRUN_VERIFIERS_PYTHON")
    if not python:
        pytest.skip("RLRUN_VERIFIERS_PYTHON unset: `make test` sets it from tools/verifiers/build.sh")
    return python


def test_without_a_verifiers_interpreter_the_environment_names_the_variable(monkeypatch):
    monkeypatch.delenv("RLRUN_VERIFIERS_PYTHON", raising=False)
    with pytest.raises(EnvironmentArgsInvalid, match=r"RLRUN_VERIFIERS_PYTHON.*tools/verifiers/build.sh"):
        make_environment("verifiers", {"taskset": "anything"})


def test_a_taskset_id_that_is_not_a_module_name_is_refused_before_anything_runs():
    with pytest.raises(EnvironmentArgsInvalid, match=r"taskset: .*not a module name"):
        make_environment("verifiers", {"taskset": "../etc/passwd", "python": "/bin/true"})


def test_an_unknown_taskset_fails_at_start_with_verifiers_reason(verifiers_python):
    with pytest.raises(EnvironmentArgsInvalid, match="taskset 'no_such_taskset' not found"):
        make_environment("verifiers", {"taskset": "no_such_taskset", "python": verifiers_python})


def test_a_known_taskset_loads_and_reports_its_size(verifiers_python, tmp_path, monkeypatch):
    (tmp_path / "vf_tiny.py").write_text(TASKSET)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    env = make_environment("verifiers", {"taskset": "vf_tiny", "python": verifiers_python})
    assert env.id == "verifiers" and len(env) == 1


def test_the_proxy_refuses_unknown_episodes_and_tool_definitions_without_sampling():
    sampled: list[list[dict]] = []

    async def sample(messages: list[dict], episode: Episode) -> dict:
        sampled.append(messages)
        raise AssertionError("a refused request reached inference")

    async def scenario() -> None:
        proxy = AgentProxy(sample)
        url = await proxy.start()
        assert url.startswith("http://127.0.0.1:")
        proxy.episodes["ep"] = Episode(0)
        user = [{"role": "user", "content": "hi"}]
        try:
            async with httpx.AsyncClient() as client:
                unknown = await client.post(
                    f"{url}/chat/completions", json={"model": "other", "messages": user}
                )
                tools = await client.post(
                    f"{url}/chat/completions",
                    json={"model": "ep", "messages": user, "tools": [{"type": "function"}]},
                )
                empty = await client.post(f"{url}/chat/completions", json={"model": "ep", "messages": []})
        finally:
            await proxy.close()
        assert unknown.status_code == 404 and "no episode 'other'" in unknown.text
        assert tools.status_code == 400 and "tool definitions" in tools.text
        assert empty.status_code == 400 and "messages" in empty.text

    asyncio.run(scenario())
    assert not sampled
