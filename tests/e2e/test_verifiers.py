"""`rlrun local` on verifiers (v1) environments through the verifiers adapter (environment.id: verifiers).

Two tasksets written here, as a user writes them for verifiers: a single-turn one scored by a `@vf.reward`
rubric, and a multi-turn one whose Env scripts a user across two turns. verifiers plays every episode in its
own interpreter (tools/verifiers/build.sh), its agent calling the env-worker's loopback proxy. The rubric
gives 0.25 or 0.75 (a hash of the answer, so groups vary), values nothing else in rlrun gives, and logs
each answer it scored; the test checks, on the samples the trainer received, that each reward is the
rubric's for exactly the text of the sampled tokens, that the loss mask covers only sampled tokens (the
second user turn is context) and, on-policy, that the trainer's logprobs equal inference's.
"""

import json
import os
import subprocess
from pathlib import Path

import msgspec
import pytest
import yaml

from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS
from rlrun.runtime.models.tiny import build_tokenizer
from rlrun.runtime.wire import TrainingBatch, floats, ints, masks

from .conftest import batch_collector, rlrun_local_watching

pytestmark = pytest.mark.e2e
RUN_FILE = Path(__file__).with_name("verifiers-short.yaml")
REPO = Path(__file__).resolve().parents[2]

RUBRIC = '''
import json
import os
import zlib

import verifiers.v1 as vf


def score(texts: list[str]) -> float:
    """0.25 or 0.75, a hash of the answers; logged so the test can check each sample's reward."""
    reward = 0.25 + 0.5 * (zlib.crc32(json.dumps(texts).encode()) % 2)
    with open(os.environ["VF_CI_RUBRIC_LOG"], "a") as log:
        log.write(json.dumps({"texts": texts, "reward": reward}) + "\\n")
    return reward
'''

SINGLE = (
    RUBRIC
    + """

class Data(vf.TaskData):
    answer: str


class SingleTask(vf.Task[Data, vf.State, vf.TaskConfig]):
    @vf.reward(weight=1.0)
    async def hashed(self, trace: vf.Trace) -> float:
        return score([m.content or "" for m in trace.assistant_messages])


class SingleTaskset(vf.Taskset[SingleTask, vf.TasksetConfig]):
    def load(self):
        for word in ["alpha", "bravo", "charlie"]:
            yield SingleTask(Data(id=word, prompt=f"Say {word}", answer=word), self.config.task)


__all__ = ["SingleTaskset"]
"""
)

MULTI = (
    RUBRIC
    + '''

class Data(vf.TaskData):
    turns: list[str]


class MultiTask(vf.Task[Data, vf.State, vf.TaskConfig]):
    @vf.reward(weight=1.0)
    async def hashed(self, trace: vf.Trace) -> float:
        texts = [m.content or "" for m in trace.assistant_messages]
        return score(texts) if len(texts) == len(self.data.turns) else 0.0


class MultiEnv(vf.SingleAgentEnv):
    """A scripted user: each of the task's turns is one user message, answered by the policy."""

    async def run(self, task, agents):
        async with agents.agent.interaction(task) as interaction:
            for prompt in task.data.turns:
                if (await interaction.turn(prompt)).terminated:
                    break


class MultiTaskset(vf.Taskset[MultiTask, vf.TasksetConfig]):
    def load(self):
        for word in ["delta", "echo"]:
            yield MultiTask(Data(id=word, prompt=None, turns=[f"Say {word}", "Again"]), self.config.task)


__all__ = ["MultiEnv", "MultiTaskset"]
'''
)


@pytest.fixture(scope="module")
def verifiers_python() -> str:
    """The verifiers interpreter `make test` builds (tools/verifiers/build.sh), else skip."""
    python = os.environ.get("RLRUN_VERIFIERS_PYTHON")
    if not python:
        pytest.skip("RLRUN_VERIFIERS_PYTHON unset: `make test` sets it from tools/verifiers/build.sh")
    return subprocess.run(
        [str(REPO / "tools" / "verifiers" / "build.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()


def _run(tmp_path: Path, verifiers_python: str, module: str, source: str) -> tuple[dict[int, bytes], Path]:
    """`rlrun local` on taskset `module`; each step's batch as the trainer read it, and the rubric's log."""
    (tmp_path / f"{module}.py").write_text(source)
    spec = yaml.safe_load(RUN_FILE.read_text())
    spec["spec"]["envWorkers"]["environment"]["args"]["taskset"] = module
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(spec))
    rubric_log = tmp_path / "rubric.jsonl"
    env = {
        "PYTHONPATH": str(tmp_path),
        "RLRUN_VERIFIERS_PYTHON": verifiers_python,
        "VF_CI_RUBRIC_LOG": str(rubric_log),
    }
    run_dir = tmp_path / "run_verifiers-ci"
    collect, received = batch_collector(run_dir)
    code, log = rlrun_local_watching(run_file, tmp_path, collect, env=env, timeout=600)
    assert code == 0, log[-6000:]
    steps = spec["spec"]["orchestrator"]["maxSteps"]
    assert sorted(received) == list(range(steps))
    trained = [
        json.loads(line) for line in (run_dir / "trainer" / "metrics_rank0.jsonl").read_text().splitlines()
    ]
    assert len(trained) == steps and sum(r["loss_tokens"] for r in trained) > 0, trained
    for record in trained:  # on-policy: the trainer's logprobs of the trained tokens are inference's
        assert record["logprob_delta_mean"] < 1e-3, trained
    return received, rubric_log


def _samples(received: dict[int, bytes]):
    for data in received.values():
        yield from msgspec.msgpack.decode(data, type=TrainingBatch).samples


def test_single_turn_verifiers_taskset_trains_on_its_rubric(
    tmp_path, verifiers_python, no_leftover_processes
):
    received, rubric_log = _run(tmp_path, verifiers_python, "vf_ci_single", SINGLE)
    scored = [json.loads(line) for line in rubric_log.read_text().splitlines()]
    by_text = {entry["texts"][0]: entry["reward"] for entry in scored}
    tokenizer = build_tokenizer()
    rewards = set()
    for sample in _samples(received):
        ids, mask = ints(sample.completion_ids), sample.completion_mask
        assert sample.env == "verifiers" and sample.example_id in {"alpha", "bravo", "charlie"}
        assert mask is None or masks(mask).all()  # one turn: every completion token was sampled
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        assert by_text[text] == sample.reward, (text, sample.reward)
        rewards.add(sample.reward)
    assert rewards == {0.25, 0.75}  # the rubric's values, both: groups had an advantage to train on


def test_multi_turn_verifiers_env_masks_the_scripted_user(tmp_path, verifiers_python, no_leftover_processes):
    received, rubric_log = _run(tmp_path, verifiers_python, "vf_ci_multi", MULTI)
    assert all(len(json.loads(line)["texts"]) == 2 for line in rubric_log.read_text().splitlines())
    tokenizer = build_tokenizer()
    headers = set(tokenizer.convert_tokens_to_ids(list(RENDERER_ONLY_TOKENS)))
    second_user = tokenizer.encode("<|im_start|>user\nAgain", add_special_tokens=False)
    merged = 0
    for sample in _samples(received):
        ids, lps = ints(sample.completion_ids), floats(sample.completion_logprobs)
        mask = masks(sample.completion_mask)
        assert sample.env == "verifiers" and sample.reward in (
            0.25,
            0.75,
        )  # both turns ran: the rubric scored
        assert len(ids) == len(lps) == len(mask)
        assert not set(ids[mask == 1].tolist()) & headers  # no header or user turn is trained
        assert (lps[mask == 1] <= 0).all() and not lps[mask == 0].any()
        context = ids[mask == 0].tolist()
        if context:  # both turns in one sample: the scripted user's message sits in the context, whole
            merged += 1
            window = len(second_user)
            assert any(context[i : i + window] == second_user for i in range(len(context))), context
    assert merged, "no sample held both turns"
