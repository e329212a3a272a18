"""The orchestrator's step loop.

For step n: wait until inference replicas serve the current policy, at least version n - maxAsyncSteps
(bounded lag; replicas.py), ask the env-workers for batchSize/groupSize groups at once (round-robin over
env-worker replicas, each group routed only to the inference replicas in sync), score groups, drop
degenerate ones, write `rollouts/step_<n>` atomically, log samples, publish progress, save its own
position, then free the step's objects. Each step's consumed and filtered groups go into the ledger
(state.py) before the position moves on; a step in flight at a crash is regenerated from the same seeds. After the last step it waits until the trainer's final weights
are served, so "orchestrator succeeded" means "run finished".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from rlrun.runtime import metrics
from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.orchestrator.advantages import is_degenerate, score_groups, split_groups
from rlrun.runtime.orchestrator.memory import release_memory
from rlrun.runtime.orchestrator.progress import ProgressPublisher
from rlrun.runtime.orchestrator.replicas import SyncState, settle_replicas, wait_for_replicas
from rlrun.runtime.orchestrator.samples import (
    fit_to_max_seq_len,
    policy_lag,
    rewards_by_version,
    sample_parts,
    strip_token_arrays,
    to_training_sample,
)
from rlrun.runtime.orchestrator.state import OrchestratorState, save_state, write_ledger
from rlrun.runtime.orchestrator.stopping import COMMIT
from rlrun.runtime.transport.handoff import write_batch
from rlrun.runtime.wire import TrainingBatch, TrainingSample

log = logging.getLogger("rlrun.orchestrator")


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
        tracker: Any = None,
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
        # The previous step's sample parquet, written while this step generates (one in flight at most):
        # awaited on the step's critical path it cost 36% of a local step (bench_local, time_log_samples_s).
        self._sample_log: asyncio.Task[Any] | None = None
        self.state = state
        self.mm_encoder = mm_encoder  # non-deferred path only: MMRefs -> encoded mm_kwargs
        self.tracker = tracker  # rlrun.runtime.tracking.Tracker, None when no tracking is configured
        self.run_dir = cfg.run_dir
        self.metrics_path = self.run_dir / "orchestrator" / "metrics.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)

    async def wait_for_version(self, minimum: int) -> tuple[SyncState, list[str]]:
        """(the replicas' state, the URLs of those to route to): in sync and serving >= `minimum`."""
        state, serving = await wait_for_replicas(
            self.client,
            self.inference_urls,
            self.run_dir,
            minimum,
            self.cfg.orchestrator.weight_sync_timeout_seconds,
            self._publish_sync,
        )
        return state, [r.url for r in serving]

    async def _publish_sync(self, state: SyncState) -> None:
        """Every change of the replicas' versions reaches status, also while a step waits on them."""
        if any(not r.in_sync for r in state.report()):  # also while a reload is under way: info, not warning
            log.info("inference replicas vs weights version %d: %s", state.weights_version, state.describe())
        update = {
            "weights_version": state.weights_version,
            "inference_replicas": state.report(),
            "updated_at": datetime.now(UTC),  # a report not newer than the last is refused by the operator
        }
        await self.publisher.publish(self.publisher.current.model_copy(update=update))

    async def _group(
        self, step: int, replica: int, example_index: int, seed: int, inference_urls: list[str]
    ) -> list[dict[str, Any]]:
        o = self.cfg.orchestrator
        body = {
            "example_index": example_index,
            "group_size": o.group_size,
            "min_policy_version": max(0, step - o.max_async_steps),
            "inference_urls": inference_urls,
            "sampling": {"temperature": o.temperature, "max_tokens": o.max_tokens, "seed": seed},
        }
        url = self.env_urls[replica % len(self.env_urls)]
        with metrics.ROLLOUT_LATENCY.time():
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

    @property
    def groups_per_step(self) -> int:
        return self.cfg.orchestrator.batch_size // self.cfg.orchestrator.group_size

    async def generate(
        self, step: int, inference_urls: list[str]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """The step's rollouts (groups contiguous) from the in-sync replicas `inference_urls`, and each
        group's (run-wide group id, sampling seed). The group id is also the example index asked of the
        env-worker."""
        rng = self.state.rng
        requests = [(index, rng.randrange(1 << 31)) for index in example_indices(step, self.groups_per_step)]
        results = await asyncio.gather(
            *(self._group(step, index, index, seed, inference_urls) for index, seed in requests)
        )
        return [rollout for group in results for rollout in group], requests

    def to_samples(
        self, rollouts: list[dict[str, Any]], groups: list[tuple[int, int]]
    ) -> tuple[list[TrainingSample], list[int], int, dict[str, int]]:
        """The step's training samples (each naming its group; a multi-turn rollout may give several), how
        many samples each group kept, how many rollouts trained nothing (degenerate group, lost image, too
        long), and how many samples `trainer.maxSeqLen` cut and dropped (metrics.jsonl `samples_truncated`,
        `samples_too_long`). Each rollout keeps only what sample logging records."""
        size = self.cfg.orchestrator.group_size
        max_seq_len = self.cfg.trainer.max_seq_len
        advantages, keep = score_groups([r["reward"] for r in rollouts], size)
        samples: list[TrainingSample] = []
        kept_per_group = [0] * len(groups)
        filtered = 0
        lengths = {"samples_truncated": 0, "samples_too_long": 0}
        for i, (rollout, advantage, kept) in enumerate(zip(rollouts, advantages, keep, strict=True)):
            produced: list[TrainingSample] = []
            for part in sample_parts(rollout) if kept else []:
                fitted = fit_to_max_seq_len(part, max_seq_len)
                if fitted.outcome == "truncated":
                    lengths["samples_truncated"] += 1
                if fitted.part is None:
                    lengths["samples_too_long"] += 1
                    log.warning(
                        "sample of %r (group %d) dropped: longer than trainer.maxSeqLen=%s and %s",
                        part.get("example_id", ""), groups[i // size][0], max_seq_len, fitted.reason,
                    )  # fmt: skip
                    continue
                produced.append(to_training_sample(fitted.part, advantage))
            strip_token_arrays(rollout, advantage)
            before = len(samples)
            for sample in produced:
                if self.mm_encoder is not None and sample.mm_refs is not None:
                    encoded = self.mm_encoder(sample.mm_refs)
                    if (
                        encoded is None
                    ):  # missingImagePolicy "drop": an image is gone, the sample trains nothing
                        continue
                    sample.mm_kwargs, sample.mm_refs = encoded, None
                sample.group = groups[i // size][0]
                kept_per_group[i // size] += 1
                samples.append(sample)
            filtered += len(samples) == before
        return samples, kept_per_group, filtered, lengths

    def _ledger_groups(
        self, rollouts: list[dict[str, Any]], groups: list[tuple[int, int]], kept: list[int]
    ) -> list[dict[str, Any]]:
        size = self.cfg.orchestrator.group_size
        return [
            {"group": group, "example": str(rollouts[i * size].get("example_id", "")), "seed": seed,
             "kept": n, "filtered": n == 0}
            for i, ((group, seed), n) in enumerate(zip(groups, kept, strict=True))
        ]  # fmt: skip

    async def step(self, step: int) -> dict[str, Any]:
        o = self.cfg.orchestrator
        t0 = time.perf_counter()
        sync, routed = await self.wait_for_version(step - o.max_async_steps)
        t_wait = time.perf_counter()
        self.state.generating = step  # saved with the RNG before this step's draws: a restart redraws them
        save_state(self.run_dir / "orchestrator", self.state)
        rollouts, groups = await self.generate(step, routed)
        t_gen = time.perf_counter()
        samples, kept, filtered, lengths = self.to_samples(rollouts, groups)
        with COMMIT.committing():  # from the batch on, a SIGTERM waits until the step is recorded
            write_batch(self.run_dir / "rollouts", TrainingBatch(step=step, samples=samples))
            ledger = self._ledger_groups(rollouts, groups, kept)
            write_ledger(self.run_dir / "orchestrator", step, self.state.attempt, ledger)
            rewards = [float(r["reward"]) for r in rollouts]
            lag = policy_lag(step, rollouts)
            by_version = rewards_by_version(rollouts)
            del samples
            t_write = time.perf_counter()
            await self.samples_logged()  # the previous step's: steps are logged in order, one at a time
            t_log = time.perf_counter()
            self._sample_log = asyncio.create_task(self.sample_logger.log_step(step, rollouts))
            record = {
                "step": step,
                "reward_mean": sum(rewards) / len(rewards),
                "rollouts": len(rollouts),
                "filtered": filtered,
                **lengths,
                "groups": len(groups),
                "groups_filtered": sum(g["filtered"] for g in ledger),
                "policy_lag": lag,
                "reward_by_version": by_version,
                "min_policy_version": max(0, step - o.max_async_steps),  # later steps sample no older one
                "served_version": min(r.served_version or 0 for r in sync.serving(0)),
                "weights_version": sync.weights_version,
                "replica_versions": {r.name: r.served_version for r in sync.replicas},
                "replicas_routed": len(routed),
                "time_wait_policy_s": t_wait - t0,
                "time_generate_s": t_gen - t_wait,
                "time_write_s": t_write - t_gen,
                "time_log_samples_s": t_log - t_write,  # waiting for the previous step's sample parquet
                "time_step_s": time.perf_counter() - t0,
            }
            degenerate = sum(map(is_degenerate, split_groups(rewards, o.group_size)))
            metrics.record_orchestrator_step(step, rollouts, record, degenerate)
            if self.tracker is not None:
                self.tracker.submit_step(step, record, rollouts)
            del rollouts
            self.state.prompts.consumed += len(groups)
            self.state.prompts.filtered += record["groups_filtered"]
            record.update(self._prompt_counts())  # run totals, as progress.json carries them
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.state.next_step, self.state.generating = step + 1, None
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
            weights_version=self.publisher.current.weights_version,
            inference_replicas=self.publisher.current.inference_replicas,
            **self._prompt_counts(),
        )

    def _prompt_counts(self) -> dict[str, int]:
        p = self.state.prompts
        return {
            "prompts_consumed": p.consumed,
            "prompts_filtered": p.filtered,
            "prompts_regenerated": p.regenerated,
        }

    async def samples_logged(self) -> None:
        """Wait for the sample parquet in flight, if any: before the next one, at the end, and on a stop
        (main.py), so a committed step's samples are on the volume whatever ends the run."""
        if self._sample_log is not None:
            await asyncio.shield(self._sample_log)  # a stop meanwhile leaves it running, and still set
            self._sample_log = None

    def account_interrupted_step(self) -> None:
        """A step that was generating when the previous attempt stopped: its rollouts were discarded with that
        process and the step runs again from the saved RNG (same group ids, same seeds); count its groups."""
        step = self.state.generating
        if step is None or step != self.state.next_step:
            return
        self.state.prompts.regenerated += self.groups_per_step
        log.warning(
            "step %d was generating when the previous attempt stopped: its %d groups are regenerated with "
            "the same group ids and seeds", step, self.groups_per_step,
        )  # fmt: skip

    async def run(self) -> None:
        o = self.cfg.orchestrator
        last: dict[str, Any] | None = None
        self.account_interrupted_step()
        for step in range(self.state.next_step, o.max_steps):
            last = await self.step(step)
            log.info("step %d reward %.3f (%.2fs)", step, last["reward_mean"], last["time_step_s"])
        await self.samples_logged()
        await self.wait_for_version(o.max_steps)
        # the other replicas may still be loading the final weights: report them once they serve them
        await settle_replicas(
            self.client, self.inference_urls, self.run_dir, o.max_steps,
            o.weight_sync_timeout_seconds, self._publish_sync,
        )  # fmt: skip
        final = self.publisher.current.model_copy(
            update={"state": "succeeded", "step": o.max_steps, **self._prompt_counts()}
        )
        if last is not None:
            final = self._progress(o.max_steps, last, state="succeeded")
        await self.publisher.publish(final)
