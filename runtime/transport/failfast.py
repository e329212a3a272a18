"""Coordinated fail-fast for the micro-batch fan-out: every rank fails together, none hangs in a collective.

Two mechanisms, both through torch.distributed:
  * the publish status: the master writes `micro_batch_publish/<step>` = ok or the packing error into the
    default store; every rank (the master too) waits for it and raises the master's error. Packing may wait
    on the orchestrator for a long time, so the wait has no fixed deadline: the master instead bumps a
    heartbeat counter in the store while it waits (`FanOut.heartbeat`), and a rank fails when the counter
    stands still for `transport.packWatchdogSeconds` (a master that is stopped, or dead while its TCP
    connection stays up). A master alive but wedged in one call is the PackWatchdog's job;
  * `raise_if_any_rank_failed`: an all-reduce(MAX) of a 0/1 flag after receiving and after materializing,
    before the forward. If any rank failed, every rank raises; bystanders name the failing ranks' errors.

The trainer's step, on every rank:

    batches = fail_together("Training-batch wait failed", lambda: fanout.exchange(step, pack_fn))
    tensors = fail_together("Training-batch load failed", lambda: materialize(batches))
    ... forward / backward ...
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import torch
import torch.distributed as dist

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.transport.fanout import MicroBatchPublisher, MicroBatchSubscriber
from rlrun.runtime.transport.watchdog import PackWatchdog
from rlrun.runtime.wire import MicroBatch

logger = logging.getLogger(__name__)

T = TypeVar("T")
STATUS_POLL_SECONDS = 1.0
HEARTBEAT_KEY = "micro_batch_master/heartbeat"
HEARTBEAT_EVERY_SECONDS = 1.0  # at most one store round trip a second, whatever the batch poll interval


class Store(Protocol):
    """The part of torch.distributed.Store used here (TCPStore, HashStore, FileStore...)."""

    def set(self, key: str, value: str | bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def check(self, keys: list[str]) -> bool: ...
    def add(self, key: str, value: int) -> int: ...


def publish_status_key(step: int) -> str:
    return f"micro_batch_publish/{step}"


def encode_status(error: BaseException | None) -> bytes:
    return json.dumps({"ok": error is None, "error": "" if error is None else repr(error)}).encode()


def raise_for_status(step: int, raw: bytes) -> None:
    """Raise the master's packing error for `step` if its status says it failed."""
    status = json.loads(raw)
    if not status.get("ok"):
        raise RuntimeError(
            f"Trainer master failed to pack micro-batch step {step}: {status.get('error') or 'unknown error'}"
        )


def wait_for_publish_status(
    store: Store,
    step: int,
    poll_seconds: float = STATUS_POLL_SECONDS,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Wait for the master's status of `step`; `on_poll` (the liveness checks) may raise to stop waiting."""
    key = publish_status_key(step)
    while not store.check([key]):
        if on_poll is not None:
            on_poll()
        time.sleep(poll_seconds)
    raise_for_status(step, store.get(key))


def _flag_device(group: dist.ProcessGroup | None) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if "nccl" in str(dist.get_backend(group)):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def raise_if_any_rank_failed(
    err: BaseException | None, what: str, group: dist.ProcessGroup | None = None
) -> None:
    """All-reduce(MAX) a failure flag; if any rank failed, raise on every rank.

    The failing rank raises "<what> on this rank; failing all ranks." chained to its own error; the others
    raise "<what> on another rank; failing all ranks. rank <r>: <error>", so every rank's log has the cause.
    The error texts are gathered only after a failure, so the happy path costs one tiny all-reduce.
    """
    flag = torch.tensor([0 if err is None else 1], dtype=torch.int64, device=_flag_device(group))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if int(flag.item()) == 0:
        return
    errors: list[str | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(errors, None if err is None else f"{type(err).__name__}: {err}", group=group)
    if err is not None:
        logger.error("%s on this rank: %s", what, errors[dist.get_rank(group)])
        raise RuntimeError(f"{what} on this rank; failing all ranks.") from err
    causes = "; ".join(f"rank {rank}: {error}" for rank, error in enumerate(errors) if error is not None)
    raise RuntimeError(f"{what} on another rank; failing all ranks. {causes}")


def fail_together(what: str, fn: Callable[[], T], group: dist.ProcessGroup | None = None) -> T:
    """Run `fn` on every rank, then `raise_if_any_rank_failed`; return its result when all succeeded."""
    try:
        result = fn()
    except Exception as exc:
        raise_if_any_rank_failed(exc, what, group)
        raise  # unreachable: the flag is set, so the call above raised
    raise_if_any_rank_failed(None, what, group)
    return result


class MasterPulse:
    """A rank's view of the master's heartbeat counter: raises when it stands still for `limit_seconds`.

    Only the counter's changes are compared, against this rank's monotonic clock, so clocks of different
    nodes never meet."""

    def __init__(self, store: Store, limit_seconds: float) -> None:
        self._store = store
        self.limit_seconds = limit_seconds
        self._value = -1
        self._changed_at = self._checked_at = time.monotonic()

    def restart(self) -> None:
        self._value, self._changed_at = self._store.add(HEARTBEAT_KEY, 0), time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < HEARTBEAT_EVERY_SECONDS:  # the status poll may run every 20 ms
            return
        self._checked_at = now
        value = self._store.add(HEARTBEAT_KEY, 0)  # add 0: read without blocking on a missing key
        if value != self._value:
            self._value, self._changed_at = value, now
        elif now - self._changed_at > self.limit_seconds:
            raise TimeoutError(
                f"The trainer master sent no heartbeat for {now - self._changed_at:.0f}s "
                f"(transport.packWatchdogSeconds={self.limit_seconds:g}) while this rank waited for its "
                "micro-batches: the master is stopped or hung; failing the group"
            )


class FanOut:
    """The trainer's side of the transport on one rank: publisher + watchdog on rank 0, subscriber on all."""

    def __init__(
        self,
        cfg: TransportConfig,
        store: Store,
        rank: int,
        world_size: int,
        start_step: int = 0,
        poll_seconds: float = STATUS_POLL_SECONDS,
    ) -> None:
        self.rank = rank
        self._store = store
        self._poll_seconds = poll_seconds
        self._publisher = MicroBatchPublisher(cfg, world_size) if rank == 0 else None
        self._watchdog = PackWatchdog(cfg.pack_watchdog_seconds) if rank == 0 else None
        self._pulse = MasterPulse(store, cfg.pack_watchdog_seconds)
        self._last_beat = 0.0
        try:
            self._subscriber = MicroBatchSubscriber(cfg, rank, start_step)
        except BaseException:
            self._close_master()
            raise

    @property
    def endpoint(self) -> str:
        """Where this rank receives micro-batches from (for logs)."""
        return self._subscriber.endpoint

    @property
    def received_bytes(self) -> int:
        """Bytes of this rank's last received step."""
        return self._subscriber.last_bytes

    def heartbeat(self) -> None:
        """Rank 0, while packing waits for its input: progress for the watchdog, liveness for the ranks."""
        if self._watchdog is None:
            return
        self._watchdog.beat()
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_EVERY_SECONDS:
            self._store.add(HEARTBEAT_KEY, 1)
            self._last_beat = now

    def _check_master(self) -> None:
        self._subscriber.check_connection()
        self._pulse.check()

    def master_step(self, step: int, pack_fn: Callable[[], Sequence[Sequence[MicroBatch]]]) -> None:
        """Rank 0: pack under the watchdog, publish, record ok or repr(error) for `step`; re-raise errors."""
        if self._publisher is None or self._watchdog is None:
            raise RuntimeError(f"master_step runs on rank 0 only (this is rank {self.rank})")
        try:
            with self._watchdog.armed(step):
                self._publisher.publish(step, pack_fn())
        except BaseException as exc:
            self._store.set(publish_status_key(step), encode_status(exc))
            raise
        self._store.set(publish_status_key(step), encode_status(None))

    def rank_step(self, step: int) -> list[MicroBatch]:
        """Every rank: wait for the master's status while its heartbeat goes on, then receive within the
        receive timeout."""
        self._pulse.restart()
        wait_for_publish_status(self._store, step, self._poll_seconds, self._check_master)
        if self._subscriber.next_step != step:
            raise ValueError(
                f"rank_step({step}) but data_rank={self.rank} expects step {self._subscriber.next_step}"
            )
        self._subscriber.wait()
        return self._subscriber.receive()

    def exchange(self, step: int, pack_fn: Callable[[], Sequence[Sequence[MicroBatch]]]) -> list[MicroBatch]:
        """`master_step` on rank 0 (pack_fn is ignored elsewhere), then `rank_step` on every rank."""
        if self._publisher is not None:
            self.master_step(step, pack_fn)
        return self.rank_step(step)

    def _close_master(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        if self._publisher is not None:
            self._publisher.close()

    def close(self) -> None:
        self._subscriber.close()
        self._close_master()
