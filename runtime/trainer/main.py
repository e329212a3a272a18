"""The trainer role: one torchrun rank (`torchrun -m rlrun.runtime.trainer` or `rlrun-trainer`).

Per step n (0-based) every rank trains on batch n and the policy becomes version n+1:
  rank 0 reads `rollouts/step_<n>` and packs per-rank micro-batches, the fan-out publishes them, every
  rank materializes pixels from refs (or decodes mm_kwargs), the step's loss-token count is summed across
  ranks, forward/backward per micro-batch, gradients summed, clipped, optimizer step; rank 0 exports
  `weights/step_<n+1>` and asks every inference replica to reload it. Every `checkpointInterval` steps a
  checkpoint with a DONE marker is written; a restarted trainer resumes from the last complete one. SIGTERM
  writes one more within the grace window (`preemption.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rlrun import pod_contract
from rlrun.runtime import stackdump
from rlrun.runtime.config import RuntimeConfig, TrainerStartup, write_trainer_startup
from rlrun.runtime.lifetime import watch_parent
from rlrun.runtime.retention import apply as apply_retention
from rlrun.runtime.retention import plan as plan_retention
from rlrun.runtime.trainer import telemetry
from rlrun.runtime.trainer.batches import MicroBatchTensors, to_tensors
from rlrun.runtime.trainer.checkpoint import (
    latest_complete,
    link_checkpoint,
    load_checkpoint,
    save_checkpoint,
    shape_mismatch,
)
from rlrun.runtime.trainer.lineage import TRAINED_FILE, append_record
from rlrun.runtime.trainer.loss import policy_loss, signal_fraction, token_logprobs
from rlrun.runtime.trainer.model import (
    full_model_state,
    full_state,
    load_policy,
    restore_state,
    shard_if_cuda,
    sum_gradients,
)
from rlrun.runtime.trainer.packing import distribute
from rlrun.runtime.trainer.peerwatch import PeerWatch
from rlrun.runtime.trainer.preemption import PREEMPTED_EXIT, Preempted, StopFlag
from rlrun.runtime.trainer.weights import export_weights, request_reload
from rlrun.runtime.transport.failfast import FanOut, fail_together, raise_if_any_rank_failed
from rlrun.runtime.transport.handoff import read_batch
from rlrun.runtime.volume import ensure_writable
from rlrun.runtime.wire import MicroBatch

log = logging.getLogger("rlrun.trainer")
INFERENCE_URLS_ENV = pod_contract.INFERENCE_URLS_ENV
# The publish-status poll sits on every step's critical path (the batch is usually ready within ms of the
# previous step): the transport's 1 s default doubled the CPU example's step time.
# (It was defined but never passed to FanOut, so every step waited ~0.5 s on average for rank 1's 1 s poll.)
STATUS_POLL_SECONDS = 0.02
# The master's wait for the orchestrator's batch file, also on the critical path when the two keep pace.
BATCH_POLL_SECONDS = 0.02


class Trainer:
    """State of one rank across steps; `run` is the whole role."""

    def __init__(
        self,
        cfg: RuntimeConfig,
        inference_urls: Sequence[str],
        stop: StopFlag | None = None,
        rendezvous_at: datetime | None = None,
    ) -> None:
        self.cfg = cfg
        self.stop = stop or StopFlag()
        self.inference_urls = list(inference_urls)
        self.reload_failures = 0  # replicas that did not confirm this step's weights (rank 0)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else (torch.device("cpu"))
        )
        run_dir = cfg.run_dir
        self.rollouts_dir = run_dir / "rollouts"
        self.ckpt_dir = run_dir / "checkpoints"
        self.weights_dir = run_dir / "weights"
        self.metrics_path = run_dir / "trainer" / f"metrics_rank{self.rank}.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self.trained_path = run_dir / "trainer" / TRAINED_FILE
        self.attempt = int(os.environ.get(pod_contract.ATTEMPT_ENV) or 0)
        self.step_groups: list[int] = []  # rank 0: the group ids of the step being trained
        self.groups_per_step = cfg.orchestrator.batch_size // cfg.orchestrator.group_size
        model_path = _model_path(cfg)
        self.model = load_policy(model_path, self.device)
        self.image_token_id = int(self.model.config.image_token_id)
        self.materializer = _materializer(cfg, model_path)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.orchestrator.learning_rate)
        self.start = self._fork_or_resume()
        if self.start:
            state = load_checkpoint(self.ckpt_dir, self.start)
            if problem := shape_mismatch(state["model"], self.model.state_dict()):
                raise ValueError(
                    f"checkpoint {self.ckpt_dir}/step_{self.start} does not fit model {cfg.model.name!r}: "
                    f"{problem}; a run resumes (or forks) only with the model it was trained from"
                )
            restore_state(self.model, self.optimizer, state)
            log.info("rank %d resumed from checkpoint step %d", self.rank, self.start)
        self.saved = self.start  # the newest version with a complete checkpoint (0: the base model)
        attempt = int(os.environ.get(pod_contract.ATTEMPT_ENV) or 0)
        previous = None
        if (
            self.rank == 0
            and attempt > 0
            and (previous := stackdump.diagnose_stopped_attempt(cfg.run_dir, attempt - 1))
        ):
            log.warning("trainer attempt %d was stopped: %s", attempt - 1, previous)
        self.startup = TrainerStartup(
            attempt=attempt, rendezvous_at=rendezvous_at, previous_attempt_stacks=previous
        )
        self._startup(model_loaded_at=_now())
        self.sharded = shard_if_cuda(self.model, self.device)
        self.fanout = FanOut(
            cfg.transport,
            dist.distributed_c10d._get_default_store(),
            self.rank,
            self.world,
            start_step=self.start,
            poll_seconds=STATUS_POLL_SECONDS,
        )

    def _fork_or_resume(self) -> int:
        """The step to start at: this run's last complete checkpoint; else, for a fork (`resumeFrom`), the
        parent's checkpoint, linked into this run's tree by rank 0 first; else 0."""
        fork = self.cfg.resume_from
        if fork is not None and latest_complete(self.ckpt_dir) is None:
            # Every rank has taken this branch before rank 0 links the checkpoint (which makes the test
            # above false): a rank deciding after the link skipped the collective below and the group hung.
            dist.barrier()
            error = None
            if self.rank == 0:
                try:
                    link_checkpoint(self.cfg.parent_dir / "checkpoints", fork.step, self.ckpt_dir, fork.run)
                    log.info("forked from run %s checkpoint step %d", fork.run, fork.step)
                except OSError as exc:
                    error = exc
            raise_if_any_rank_failed(error, "Linking the resumeFrom checkpoint failed")
        return latest_complete(self.ckpt_dir) or 0

    def run(self) -> None:
        if self.rank == 0:
            append_record(self.trained_path, {"attempt": self.attempt, "resumedFrom": self.start})
        try:
            if self.start:  # inference restarted from the base model: serve the resumed weights again
                self._publish_weights(self.start)
            for step in range(self.start, self.cfg.orchestrator.max_steps):
                self.train_step(step)
                if step == self.start:
                    self._startup(first_step_at=_now())
        finally:
            self.fanout.close()
            self.materializer.close()

    def _pack(self, step: int) -> list[list[MicroBatch]]:
        batch = read_batch(
            self.rollouts_dir,
            step,
            poll_seconds=BATCH_POLL_SECONDS,
            should_stop=self.stop.is_set,  # SIGTERM: abandon the wait (the orchestrator may be gone)
            on_wait=self.fanout.heartbeat,
        )
        self.step_groups = sorted({s.group for s in batch.samples})
        return distribute(batch.samples, self.cfg.trainer.micro_batch_size, self.world)

    def train_step(self, step: int) -> None:
        t0 = time.perf_counter()
        try:
            mbs = fail_together(
                "Training-batch wait failed", lambda: self.fanout.exchange(step, lambda: self._pack(step))
            )
        except RuntimeError:  # raised on every rank alike, so every rank takes part in the verdict
            if self.stop.agreed(self.device):
                self._checkpoint(step)  # nothing of `step` was trained: the state is still version `step`
                raise Preempted(step) from None
            raise
        t_wait = time.perf_counter()
        tensors = fail_together("Training-batch load failed", lambda: [self._load(mb) for mb in mbs])
        t_load = time.perf_counter()
        local_tokens = sum(int(t.loss_mask.sum()) for t in tensors)
        # [loss tokens, informative groups]: only rank 0 packed the batch, so only it knows the groups.
        counts = torch.tensor(
            [local_tokens, len(self.step_groups) if self.rank == 0 else 0],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        normalizer = float(counts[0].item()) / (self.world if self.sharded else 1)
        signal = signal_fraction(int(counts[1].item()), self.groups_per_step)
        stats = [self._forward_backward(t, normalizer) for t in tensors]
        if not self.sharded:
            sum_gradients(self.model)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.max_grad_norm)
        )
        if normalizer > 0:  # an all-degenerate step has no signal: keep Adam's moments untouched
            scale = signal if self.cfg.trainer.scale_step_by_signal else 1.0
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.orchestrator.learning_rate * scale
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.rank == 0:  # before this step can reach a checkpoint
            append_record(
                self.trained_path, {"step": step, "attempt": self.attempt, "groups": self.step_groups}
            )
        version = step + 1
        t_train = time.perf_counter()
        self._publish_weights(version)
        if version % self.cfg.trainer.checkpoint_interval == 0 or version == self.cfg.orchestrator.max_steps:
            self._checkpoint(version)
        t_publish = time.perf_counter()
        self._log_metrics(step, mbs, stats, grad_norm, signal, t0, t_wait, t_load, t_train, t_publish)
        if self.stop.agreed(self.device):  # the step in flight is finished: keep it
            self._checkpoint(version)
            raise Preempted(version)

    def _startup(self, **phases: datetime) -> None:
        """Record a start-up phase's end (rank 0 writes the file the orchestrator relays)."""
        self.startup = self.startup.model_copy(update=phases)
        if self.rank == 0:
            write_trainer_startup(self.cfg.run_dir, self.startup)

    def _checkpoint(self, version: int) -> None:
        """Checkpoint `version` on every rank together, unless it is the newest complete one already."""
        if version == self.saved:
            return
        state = full_state(self.model, self.optimizer)
        if self.rank == 0:
            save_checkpoint(self.ckpt_dir, version, state)
        dist.barrier()
        self.saved = version
        if self.rank == 0:  # after the barrier: it stays right behind the checkpoint's DONE marker
            # Consumed batches no resume reads again (and anything else the policy lets go).
            apply_retention(plan_retention(self.cfg.run_dir, self.cfg.retention))

    def _load(self, mb: MicroBatch) -> MicroBatchTensors:
        return to_tensors(mb, self.materializer, self.image_token_id, pin=self.device.type == "cuda")

    def _forward_backward(self, host: MicroBatchTensors, normalizer: float) -> dict[str, float]:
        """One micro-batch's forward and backward; its tensors are on the device only for this call."""
        t = host.on(self.device)
        out = self.model(
            input_ids=t.input_ids, attention_mask=t.attention_mask, use_cache=False, **t.model_kwargs
        )
        logprobs = token_logprobs(out.logits, t.input_ids, self.cfg.orchestrator.temperature)
        loss, stats = policy_loss(
            logprobs,
            t.inference_logprobs,
            t.advantages,
            t.loss_mask,
            self.cfg.trainer.clip_epsilon,
            normalizer,
        )
        loss.backward()
        return {
            "loss": float(loss.detach()),
            "loss_tokens": stats.loss_tokens,
            "clip_fraction": stats.clip_fraction,
            "abs_logprob_delta_sum": stats.abs_logprob_delta_sum,
        }

    def _publish_weights(self, version: int) -> None:
        state = full_model_state(self.model)
        if self.rank == 0:
            path = export_weights(self.weights_dir, version, state, keep=self.cfg.retention.weights_keep_last)
            failed = request_reload(
                self.inference_urls,
                path,
                version,
                self.cfg.orchestrator.weight_sync_timeout_seconds,
                should_stop=self.stop.is_set,
            )
            self.reload_failures = len(failed)
        dist.barrier()

    def _log_metrics(self, step: int, mbs: list[MicroBatch], stats: list[dict[str, float]], grad_norm: float,
                     signal: float, t0: float, t_wait: float, t_load: float, t_train: float,
                     t_publish: float) -> None:  # fmt: skip
        record: dict[str, Any] = {
            "step": step,
            "rank": self.rank,
            "world_size": self.world,
            "micro_batches": len(mbs),
            "samples": sum(mb.num_samples for mb in mbs),
            "mm_refs_micro_batches": sum(mb.mm_refs is not None for mb in mbs),
            "mm_kwargs_micro_batches": sum(mb.mm_kwargs is not None for mb in mbs),
            "fanout_bytes_received": self.fanout.received_bytes,
            "pixel_bytes_received": sum(
                len(t.data) for mb in mbs if mb.mm_kwargs for t in mb.mm_kwargs.values()
            ),
            "images_materialized": sum(len(mb.mm_refs.uris) for mb in mbs if mb.mm_refs is not None),
            **self.materializer.reset_stats().metrics(),
            "loss": sum(s["loss"] for s in stats),
            "loss_tokens": sum(s["loss_tokens"] for s in stats),
            "clip_fraction": float(np.mean([s["clip_fraction"] for s in stats])) if stats else 0.0,
            "grad_norm": grad_norm,  # before the clip and the signal scale
            "signal_fraction": signal,
            # Mean |trainer - engine| logprob over this rank's sampled tokens (train/inference mismatch).
            "logprob_delta_mean": sum(s["abs_logprob_delta_sum"] for s in stats)
            / max(sum(s["loss_tokens"] for s in stats), 1),
            "replicas_reload_failed": self.reload_failures,
            "time_wait_s": t_wait - t0,
            "time_load_s": t_load - t_wait,
            "time_train_s": t_train - t_load,
            "time_publish_s": t_publish - t_train,  # weights exported, replicas reloaded, any checkpoint
            "time_step_s": time.perf_counter() - t0,
        }
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        telemetry.record_step(record, self.device)


def _now() -> datetime:
    return datetime.now(UTC)


def _model_path(cfg: RuntimeConfig) -> Path | str:
    from rlrun.runtime.models.tiny import resolve_model

    return resolve_model(cfg.model.name, cfg.run_dir, seed=cfg.orchestrator.seed)


def _materializer(cfg: RuntimeConfig, model_path: Path | str) -> Any:
    """One per rank, built whatever the flag: the kwargs path still needs its geometry for the checks."""
    from rlrun.runtime.mm import Materializer, load_image_processor

    return Materializer.from_config(cfg.multimodal, load_image_processor(model_path), root=cfg.run_dir)


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, resolved against the environment (pure): `inference_url` from the flags, else
    $RLRUN_INFERENCE_URLS. torch.distributed's own env (MASTER_ADDR, RANK, ...) is read by torch."""
    parser = argparse.ArgumentParser(prog="rlrun-trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="runtime config JSON (default: $RLRUN_CONFIG)")
    parser.add_argument(
        "--inference-url",
        action="append",
        default=[u for u in environ.get(INFERENCE_URLS_ENV, "").split(",") if u],
        help=f"inference server to reload after each step (repeatable; default ${INFERENCE_URLS_ENV})",
    )
    return parser.parse_args(argv)


def world_size_mismatch(cfg: RuntimeConfig, environ: Mapping[str, str]) -> str | None:
    """Why torchrun's group does not have the shape the run asked for (trainer.nodes x processesPerNode),
    or None. A hand-edited trainer Job or a stale config would otherwise train with another batch split."""
    expected = cfg.trainer.nodes * cfg.trainer.processes_per_node
    world = int(environ.get("WORLD_SIZE", "1"))
    if world == expected:
        return None
    return (
        f"torchrun started {world} ranks but the run's config asks for trainer.nodes {cfg.trainer.nodes} x "
        f"processesPerNode {cfg.trainer.processes_per_node} = {expected}: the trainer Job and the run's "
        "config disagree (re-apply the RLRun; do not edit its Jobs)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = settings_from(argv, os.environ)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s trainer[%(process)d] %(levelname)s %(message)s"
    )
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun killed outright (SIGKILL) must not leave its ranks
        watch_parent(("torchrun", "torch.distributed.run"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = RuntimeConfig.load(args.config)
    ensure_writable(cfg.run_dir)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if mismatch := world_size_mismatch(cfg, os.environ):
        log.error("%s", mismatch)
        return 2
    # Every collective and barrier is bounded: a hung (stopped, wedged) rank fails the group within it.
    timeout = timedelta(seconds=cfg.transport.collective_timeout_seconds)
    metrics_dir, served = telemetry.start(os.environ)
    if served:
        log.info("metrics of every rank on http://%s:%d/metrics", *served)
    stop = StopFlag()
    stop.install()  # before the rendezvous: a SIGTERM during start-up still ends in an orderly stop
    try:
        dist.init_process_group(backend=backend, timeout=timeout)
        rendezvous_at = _now()
        rank, world = dist.get_rank(), dist.get_world_size()
        attempt = int(os.environ.get(pod_contract.ATTEMPT_ENV) or 0)
        stackdump.install(cfg.run_dir, attempt, f"{stackdump.TRAINER_PREFIX}{rank}")
        # A rank that stops running gets every live rank's stacks dumped and fails the group (peerwatch.py).
        watch = PeerWatch(cfg.run_dir, attempt, rank, world, cfg.transport.peer_silence_seconds)
        try:
            Trainer(cfg, args.inference_url, stop, rendezvous_at).run()
        except Preempted as preempted:
            log.warning("%s: the resumed run starts at step %d", preempted, preempted.version)
            return PREEMPTED_EXIT
        finally:
            watch.close()
            dist.destroy_process_group()
    finally:
        telemetry.stop(metrics_dir, served is not None)
    return 0
