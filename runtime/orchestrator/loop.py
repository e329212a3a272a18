"""The orchestrator's step loop.

For step n: wait until the served policy is at least version n - maxAsyncSteps (bounded lag), ask the
env-workers for batchSize/groupSize groups at once (round-robin over replicas), score groups, drop
degenerate ones, write `rollouts/step_<n>` atomically, log samples, publish progress, save its own
position, then free the step's objects. After the last step it waits until the trainer's final weights
are served, so "orchestrator succeeded" means "run finished".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.orchestrator.advantages import score_groups
from rlrun.runtime.orchestrator.memory import release_memory
from rlrun.runtime.orchestrator.progress import ProgressPublisher
from rlrun.runtime.orchestrator.samples import policy_lag, strip_token_arrays, to_training_sample
from rlrun.runtime.orchestrator.state import OrchestratorState, save_state
from rlrun.runtime.transport.handoff import write_batch
from rlrun.runtime.wire import TrainingBatch, TrainingSample

log = logging.getLogger("rlrun.orchestrator")
VERSION_POLL_SECONDS = 0.1


def example_indices(step: int, groups: int) -> list[int]:
    """The example index of each group of `step`: the dataset walked in order, `groups` per step.

    Environments take indices modulo their length, so a step with k * len(dataset) groups covers every
    example exactly k times. Indices drawn at random left some colours out of a step and drew others
    twice; the shared answer distribution then drifted towards the over-drawn colours' codewords.
    """
    return [step * groups + i for i in range(groups)]


class Orchestrator:
    def __init__(
        self,
        cfg: RuntimeConfig,
        env_urls: Sequence[str],
        inference_urls: Sequence[str],
        client: httpx.AsyncClient,
        publisher: ProgressPublisher,
        sample_logger: Any,
        state: OrchestratorState,
        mm_encoder: Any = None,
    ) -> None:
        if not env_urls or not inference_urls:
            raise ValueError(
                f"orchestrator needs env-worker and inference URLs, got {env_urls} / {inference_urls}"
            )
        self.cfg = cfg
        self.env_urls = list(env_urls)
        self.inference_urls = list(inference_urls)
        self.client = client
        self.publisher = publisher
        self.sample_logger = sample_logger
        self.state = state
        self.mm_encoder = mm_encoder  # non-deferred path only: MMRefs -> encoded mm_kwargs
        self.run_dir = cfg.run_dir
        self.metrics_path = self.run_dir / "orchestrator" / "metrics.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)

    async def served_version(self) -> int:
        """The oldest policy version any inference server serves (all must catch up)."""
        versions = []
        for url in self.inference_urls:
            response = await self.client.get(f"{url}/v1/version")
            response.raise_for_status()
            versions.append(int(response.json()["version"]))
        return min(versions)

    async def wait_for_version(self, minimum: int) -> int:
        while (version := await self.served_version()) < minimum:
            await asyncio.sleep(VERSION_POLL_SECONDS)
        return version

    async def _group(self, step: int, replica: int, example_index: int, seed: int) -> list[dict[str, Any]]:
        o = self.cfg.orchestrator
        body = {
            "example_index": example_index,
            "group_size": o.group_size,
            "min_policy_version": max(0, step - o.max_async_steps),
            "sampling": {"temperature": o.temperature, "max_tokens": o.max_tokens, "seed": seed},
        }
        url = self.env_urls[replica % len(self.env_urls)]
        response = await self.client.post(f"{url}/v1/rollouts", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"env-worker {url} failed example {example_index}: "
                f"HTTP {response.status_code} {response.text[:500]}"
            )
        rollouts = response.json()["rollouts"]
        if len(rollouts) != o.group_size:
            raise RuntimeError(f"env-worker {url} returned {len(rollouts)} rollouts, expected {o.group_size}")
        return rollouts

    async def generate(self, step: int) -> list[dict[str, Any]]:
        groups = self.cfg.orchestrator.batch_size // self.cfg.orchestrator.group_size
        rng = self.state.rng
        requests = [(index, index, rng.randrange(1 << 31)) for index in example_indices(step, groups)]
        results = await asyncio.gather(*(self._group(step, *r) for r in requests))
        return [rollout for group in results for rollout in group]

    def to_samples(self, rollouts: list[dict[str, Any]]) -> tuple[list[TrainingSample], int]:
        """The step's training samples; each rollout keeps only what sample logging records."""
        advantages, keep = score_groups([r["reward"] for r in rollouts], self.cfg.orchestrator.group_size)
        samples = []
        for rollout, advantage, kept in zip(rollouts, advantages, keep, strict=True):
            sample = to_training_sample(rollout, advantage) if kept else None
            strip_token_arrays(rollout, advantage)
            if sample is None:
                continue
            if self.mm_encoder is not None and sample.mm_refs is not None:
                encoded = self.mm_encoder(sample.mm_refs)
                if encoded is None:  # missingImagePolicy "drop": an image is gone, the sample trains nothing
                    continue
                sample.mm_kwargs, sample.mm_refs = encoded, None
            samples.append(sample)
        return samples, len(rollouts) - len(samples)

    async def step(self, step: int) -> dict[str, Any]:
        o = self.cfg.orchestrator
        t0 = time.perf_counter()
        version = await self.wait_for_version(step - o.max_async_steps)
        t_wait = time.perf_counter()
        rollouts = await self.generate(step)
        t_gen = time.perf_counter()
        samples, filtered = self.to_samples(rollouts)
        write_batch(self.run_dir / "rollouts", TrainingBatch(step=step, samples=samples))
        rewards = [float(r["reward"]) for r in rollouts]
        lag = policy_lag(step, rollouts)
        del samples
        t_write = time.perf_counter()
        await self.sample_logger.log_step(step, rollouts)
        record = {
            "step": step,
            "reward_mean": sum(rewards) / len(rewards),
            "rollouts": len(rollouts),
            "filtered": filtered,
            "policy_lag": lag,
            "served_version": version,
            "time_wait_policy_s": t_wait - t0,
            "time_generate_s": t_gen - t_wait,
            "time_write_s": t_write - t_gen,
            "time_step_s": time.perf_counter() - t0,
        }
        del rollouts
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.state.next_step = step + 1
        save_state(self.run_dir / "orchestrator", self.state)
        await self.publisher.publish(self._progress(step + 1, record))
        release_memory()
        return record

    def _progress(self, completed: int, record: dict[str, Any], state: str = "running") -> Progress:
        return Progress(
            run_id=self.cfg.run_id,
            attempt=self.state.attempt,
            step=completed,
            max_steps=self.cfg.orchestrator.max_steps,
            reward_mean=record["reward_mean"],
            samples_per_second=record["rollouts"] / max(record["time_step_s"], 1e-9),
            policy_lag=record["policy_lag"],
            step_seconds=record["time_step_s"],
            state=state,  # type: ignore[arg-type]
        )

    async def run(self) -> None:
        o = self.cfg.orchestrator
        last: dict[str, Any] | None = None
        for step in range(self.state.next_step, o.max_steps):
            last = await self.step(step)
            log.info("step %d reward %.3f (%.2fs)", step, last["reward_mean"], last["time_step_s"])
        await self.wait_for_version(o.max_steps)
        final = self.publisher.current.model_copy(update={"state": "succeeded", "step": o.max_steps})
        if last is not None:
            final = self._progress(o.max_steps, last, state="succeeded")
        await self.publisher.publish(final)
